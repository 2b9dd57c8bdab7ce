//! The node side: what runs on a machine of the fleet. `ensure` asks the build service (or the
//! store) for the driver of this machine's kernel and waits for it; `install` checks a driver
//! package (vermagic, symbol versions, signer) and puts it in place with depmod, load and
//! rollback; `hooks` install the kernel-install hooks and the boot unit that call `ensure` for a
//! new kernel; `machine` reads this machine's identity.

pub mod ensure;
pub mod hooks;
pub mod install;
pub mod machine;

pub use machine::{LocalError, host_identity, local_identity};
