//! `kfleet nodes IDENTITY`: which nodes run a kernel, read again from the inventories.

use crate::cli::NodesArgs;
use crate::report::ListFormat;
use anyhow::Result;
use std::process::ExitCode;

pub(crate) fn nodes_cmd(args: NodesArgs) -> Result<ExitCode> {
    let given = args.identity.trim();
    // The key as coverage writes it (a valid key in another spelling finds the same nodes).
    let key = crate::identity::KernelIdentity::from_key(given)
        .map(|id| id.key())
        .unwrap_or_else(|_| given.to_string());
    let found = crate::inventory::nodes_of(&args.inventory, &key, args.limit)?;
    match args.format {
        ListFormat::Json => outln!("{}", serde_json::to_string_pretty(&found)?),
        ListFormat::Table => {
            let cells: Vec<Vec<String>> = found
                .nodes
                .iter()
                .map(|n| {
                    vec![
                        crate::text::clean(&n.name).into_owned(),
                        crate::text::clean(&n.source).into_owned(),
                        crate::text::clean(
                            &n.labels
                                .iter()
                                .map(|(k, v)| format!("{k}={v}"))
                                .collect::<Vec<_>>()
                                .join(","),
                        )
                        .into_owned(),
                    ]
                })
                .collect();
            if !cells.is_empty() {
                out!(
                    "{}",
                    crate::text::grid(&["NODE", "SOURCE", "LABELS"], &cells, &[])
                );
            }
            let shown = found.nodes.len() as u64;
            outln!(
                "{} run {}{}",
                crate::text::count(found.total, "node", "nodes"),
                crate::text::clean(&key),
                if shown < found.total {
                    format!(" (the first {shown} shown; --limit N shows more)")
                } else {
                    String::new()
                }
            );
        }
    }
    if found.total == 0 && crate::identity::KernelIdentity::from_key(given).is_err() {
        tracing::warn!(
            "{} is not a valid identity key (DISTRIBUTION/VERSION/ARCH/KERNEL); copy it from `kfleet report`",
            crate::text::clean(given)
        );
    }
    Ok(ExitCode::SUCCESS)
}
