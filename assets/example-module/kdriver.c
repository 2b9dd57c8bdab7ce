// SPDX-License-Identifier: GPL-2.0
/* A minimal out-of-tree module standing in for the driver kfleet ships. */
#include <linux/init.h>
#include <linux/module.h>

static int __init kdriver_init(void)
{
	pr_info("kdriver: loaded\n");
	return 0;
}

static void __exit kdriver_exit(void)
{
	pr_info("kdriver: unloaded\n");
}

module_init(kdriver_init);
module_exit(kdriver_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kfleet example driver");
