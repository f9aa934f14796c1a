//! The Debian images a spec's machines need (those with `packages`, `files` or
//! `init`): each distinct content built once (or taken from the cache) before anything
//! boots, with progress in the run's log, and a package the mirror lacks reported at
//! its place in the spec.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use crate::error::Error;
use crate::log::Log;
use crate::spec::{PackageSource, Spec};
use flotilla_image::debian::{self, GuestFile, Recipe};

/// `spec` with an `image` for each Debian machine: the cached image of its content.
pub(crate) fn with_images(spec: &Spec, log: &Log) -> Result<Spec, Error> {
    // Machines of equal content share an image: one build per recipe.
    let mut recipes: Vec<(Recipe, Vec<String>)> = Vec::new();
    for (name, machine) in spec.machines.iter().filter(|(_, m)| m.is_debian()) {
        let recipe = recipe_of(machine);
        match recipes.iter_mut().find(|(r, _)| *r == recipe) {
            Some((_, names)) => names.push(name.clone()),
            None => recipes.push((recipe, vec![name.clone()])),
        }
    }
    let mut spec = spec.clone();
    for (recipe, names) in recipes {
        let who = names.join(", ");
        let started = Instant::now();
        log.info(&format!(
            "{who}: Debian image ({}; packages: {}; {} file(s))",
            recipe.init,
            describe_packages(&recipe),
            recipe.files.len()
        ));
        let print = |line: &str| log.info(&format!("{who}: {line}"));
        let image = debian::image(&recipe, &print).map_err(|e| placed(e, &spec, &names))?;
        log.info(&format!(
            "{who}: image ready in {:.1} s: {}",
            started.elapsed().as_secs_f64(),
            image.display()
        ));
        for name in &names {
            if let Some(m) = spec.machines.get_mut(name) {
                m.image = Some(image.clone());
            }
        }
    }
    Ok(spec)
}

/// The image content of a machine.
fn recipe_of(machine: &crate::spec::MachineSpec) -> Recipe {
    let mut packages = Vec::new();
    let mut debs: Vec<PathBuf> = Vec::new();
    for p in &machine.packages {
        match &p.source {
            PackageSource::Name(n) => packages.push(n.clone()),
            PackageSource::Deb(d) => debs.push(d.clone()),
        }
    }
    packages.sort();
    packages.dedup();
    debs.sort();
    debs.dedup();
    let mut files: Vec<GuestFile> = machine
        .files
        .iter()
        .map(|f| GuestFile {
            guest: f.guest.clone(),
            source: f.source.clone(),
        })
        .collect();
    files.sort_by(|a, b| a.guest.cmp(&b.guest));
    Recipe {
        init: machine.init.unwrap_or_default(),
        packages,
        debs,
        files,
        size_mib: None,
    }
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
