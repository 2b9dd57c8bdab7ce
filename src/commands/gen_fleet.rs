//! `kfleet gen-fleet`: a deterministic synthetic fleet and releases.

use super::prelude::*;

pub(crate) fn gen_fleet_cmd(args: GenFleetArgs, config: &Config) -> Result<ExitCode> {
    let spec = FleetSpec {
        nodes: args.nodes,
        seed: args.seed,
        identities: args.identities,
        template: args.naming.template(config)?,
        repo: args.repo,
    };
    let made = generate(&spec, &args.out)?;
    outln!(
        "wrote {}/fleet.csv ({} nodes, {} identities, {} bad rows) and releases.json ({} releases)",
        args.out.display(),
        made.nodes,
        made.identities,
        made.bad_rows,
        made.releases
    );
    Ok(ExitCode::SUCCESS)
}
