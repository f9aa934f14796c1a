//! The Debian images a plan's machines need (those with `packages`, `files` or
//! `init`, [`Plan::images`]): each distinct content built once (or taken from the
//! cache) before anything boots, with progress in the run's log, and a package the mirror lacks reported at
//! its place in the spec.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use crate::error::Error;
use crate::log::Log;
use crate::plan::Plan;
use crate::spec::{PackageSource, Spec};
use flotilla_image::debian::{self, Recipe};

/// The plan's Debian images ([`Plan::images`]), in its order: each one's cached image.
/// A package the mirror lacks is an error at its place in `spec`.
pub(crate) fn build(plan: &Plan, spec: &Spec, log: &Log) -> Result<Vec<PathBuf>, Error> {
    let mut images = Vec::new();
    for build in &plan.images {
        let (recipe, names) = (&build.recipe, &build.machines);
        let who = names.join(", ");
        let started = Instant::now();
        log.info(&format!(
            "{who}: Debian image ({} {}, {}; packages: {}; {} file(s))",
            recipe.release,
            recipe.release.version(),
            recipe.init,
            describe_packages(recipe),
            recipe.files.len()
        ));
        let print = |line: &str| log.info(&format!("{who}: {line}"));
        let image = debian::image(recipe, &print).map_err(|e| placed(e, spec, names))?;
        log.info(&format!(
            "{who}: image ready in {:.1} s: {}",
            started.elapsed().as_secs_f64(),
            image.display()
        ));
        images.push(image);
    }
    Ok(images)
}

fn describe_packages(recipe: &Recipe) -> String {
    let mut all: Vec<String> = recipe.packages.clone();
    all.extend(recipe.debs.iter().map(|d| {
        d.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }));
    if all.is_empty() {
        "the defaults".into()
    } else {
        all.join(", ")
    }
}

/// A package the mirror lacks becomes a spec error at the first entry that names it.
fn placed(e: flotilla_image::Error, spec: &Spec, names: &[String]) -> Error {
    let flotilla_image::Error::UnknownPackage {
        package,
        suite,
        mirror,
    } = &e
    else {
        return e.into();
    };
    let machines: BTreeMap<&String, _> = names
        .iter()
        .filter_map(|n| Some((n, spec.machines.get(n)?)))
        .collect();
    for (name, machine) in machines {
        for p in &machine.packages {
            if p.source == PackageSource::Name(package.clone()) {
                return Error::Spec {
                    file: spec.path.clone(),
                    line: p.line,
                    column: p.column,
                    message: format!(
                        "machine `{name}`: Debian {suite} has no package `{package}` (mirror {mirror}); nothing was cached"
                    ),
                };
            }
        }
    }
    e.into()
}
