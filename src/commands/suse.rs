//! `kfleet suse register` and `deregister`: a build job's system at SUSE Customer Center (or an
//! RMT server), for the registered repositories that hold SLES kernels' headers.

use crate::cli::{SuseCommand, runtime};
use crate::headers::scc::{self, Product, Registration};
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::ExitCode;

/// The registration: the system's login and every repository with its token.
const REGISTRATION: &str = "registration.json";

pub(crate) fn suse_cmd(cmd: SuseCommand) -> Result<ExitCode> {
    match cmd {
        SuseCommand::Register {
            out,
            release,
            arch,
            products,
            name,
            scc_url,
        } => register(&out, &release, &arch, &products, &name, &scc_url),
        SuseCommand::Deregister { dir } => deregister(&dir),
    }?;
    Ok(ExitCode::SUCCESS)
}

fn regcode() -> Result<String> {
    use crate::environment::{KFLEET_SUSE_REGCODE, KFLEET_SUSE_REGCODE_FILE};
    crate::environment::secret_name(
        KFLEET_SUSE_REGCODE,
        KFLEET_SUSE_REGCODE_FILE,
        "registration code",
    )
    .map_err(anyhow::Error::msg)
}

/// The products to activate: the release's own (base product first), then `extra`.
fn products_for(release: &str, arch: &str, extra: &[Product]) -> Result<Vec<Product>> {
    let known = crate::distros::registration_products("sles", release);
    if known.is_empty() && extra.is_empty() {
        bail!(
            "kfleet knows no products to register for SLES {}: add them to {} or name them with --product IDENTIFIER/VERSION/ARCH (base product first)",
            crate::text::clean(release),
            crate::distros::DATA_FILE
        );
    }
    let mut products = Vec::new();
    for identifier in known {
        products.push(
            format!("{identifier}/{release}/{arch}")
                .parse::<Product>()
                .map_err(|e| anyhow::anyhow!("--release or --arch: {e}"))?,
        );
    }
    products.extend(extra.iter().cloned());
    Ok(products)
}

fn register(
    out: &Path,
    release: &str,
    arch: &str,
    extra: &[Product],
    name: &str,
    base: &str,
) -> Result<()> {
    let products = products_for(release, arch, extra)?;
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
    {
        bail!("--name: a host name (letters, digits, - and .) of at most 64 characters");
    }
    let code = regcode()?;
    if out.join(REGISTRATION).exists() {
        bail!(
            "{} already holds a registered system: kfleet suse deregister {} first",
            out.display(),
            out.display()
        );
    }
    crate::fsio::create_private_dir(out)
        .with_context(|| format!("cannot make {}", out.display()))?;
    let rt = runtime()?;
    let system = rt.block_on(scc::announce(base, &code, name, arch))?;
    // From here on a failure deregisters the system, so none is left behind; the system is
    // kept on file first, so a deregistration that fails can be tried again.
    let keep = |repositories: Vec<scc::Repository>| -> Result<usize> {
        let registration = Registration {
            scc_url: base.to_string(),
            system: system.clone(),
            repositories,
        };
        let text = serde_json::to_string_pretty(&registration)?;
        crate::fsio::write_private(&out.join(REGISTRATION), text.as_bytes())
            .with_context(|| format!("cannot write {}", out.join(REGISTRATION).display()))?;
        Ok(registration.repositories.len())
    };
    let kept = keep(Vec::new()).and_then(|_| {
        let extras_from = products.len() - extra.len();
        let repositories = rt.block_on(activate(base, &system, &products, extras_from, &code))?;
        if repositories.is_empty() {
            bail!(
                "the activated products' services list no repository: are the release and the architecture the ones the registration code covers?"
            );
        }
        keep(repositories)
    });
    let count = match kept {
        Ok(count) => count,
        Err(e) => {
            let undone = rt.block_on(scc::deregister(base, &system));
            return Err(match undone {
                Ok(()) => {
                    let _ = std::fs::remove_file(out.join(REGISTRATION));
                    e.context(format!("system {} deregistered again", system.id))
                }
                Err(u) => e.context(format!(
                    "and system {} could not be deregistered ({u}): `kfleet suse deregister {}` tries again (the build job's last step does), or remove it in SUSE Customer Center",
                    system.id,
                    out.display()
                )),
            });
        }
    };
    outln!(
        "registered system {} at {} with {}: {count} repositories",
        system.id,
        crate::text::clean(base),
        products
            .iter()
            .map(Product::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    outln!(
        "{}={}",
        crate::environment::KFLEET_SUSE_REGISTRATION,
        out.join(REGISTRATION).display()
    );
    Ok(())
}

/// Activates `products` on the system and answers the repositories their services list. The
/// base product (the first) and the extensions from `extras_from` on take the code; the
/// release's modules between them are free.
async fn activate(
    base: &str,
    system: &scc::System,
    products: &[Product],
    extras_from: usize,
    code: &str,
) -> Result<Vec<scc::Repository>, scc::SccError> {
    let mut repositories = Vec::new();
    for (i, product) in products.iter().enumerate() {
        let paid = i == 0 || i >= extras_from;
        let service = scc::activate(base, system, product, paid.then_some(code)).await?;
        repositories.extend(scc::service_repositories(base, system, &service).await?);
    }
    Ok(repositories)
}

fn deregister(dir: &Path) -> Result<()> {
    let file = dir.join(REGISTRATION);
    let text = Registration::read_text(&file).map_err(anyhow::Error::msg)?;
    let registration = Registration::parse(&text)
        .map_err(|problem| anyhow::anyhow!("{}: {problem}", file.display()))?;
    runtime()?.block_on(scc::deregister(&registration.scc_url, &registration.system))?;
    std::fs::remove_file(&file).with_context(|| format!("cannot remove {}", file.display()))?;
    outln!("deregistered system {}", registration.system.id);
    Ok(())
}
