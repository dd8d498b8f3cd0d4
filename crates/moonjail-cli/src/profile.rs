//! `moonjail profile`: what each profile lets a script reach.

use std::io::Write;
use std::process::ExitCode;

use clap::Subcommand;
use moonjail::{Item, Profile};

use crate::output;

#[derive(Subcommand, Debug)]
pub enum ProfileCommand {
    /// List the profiles.
    List,
    /// Print everything a profile exposes, and how each guarded name is made safe.
    Show {
        /// minimal, standard or aos
        name: String,
        /// Print as JSON. A misuse (status 2) is the document of `run --json`, error kind
        /// "input".
        #[arg(long)]
        json: bool,
    },
}

/// Lists the profiles, or prints what one exposes.
pub fn profile(command: ProfileCommand) -> anyhow::Result<ExitCode> {
    let mut out = output::stdout();
    match command {
        ProfileCommand::List => {
            for p in Profile::ALL {
                writeln!(out, "{:<10} {}", p.name(), p.spec().summary)?;
            }
        }
        ProfileCommand::Show { name, json } => {
            let p: Profile = name.parse()?;
            let spec = p.spec();
            let mut rows: Vec<(String, Option<&str>)> = Vec::new();
            for item in spec.items {
                match item {
                    Item::Global(g) => rows.push((g.to_string(), moonjail::guard_note(g))),
                    Item::GlobalsRef => rows.push(("_G".into(), Some("the sandbox's own globals"))),
                    Item::Json => rows.push((
                        "json".into(),
                        Some("json.encode, json.decode, json.null (Rust, under the run's limits)"),
                    )),
                    Item::Alias { name, target } => {
                        rows.push((name.to_string(), Some(alias_note(target))))
                    }
                    Item::Package => {
                        rows.push((
                            "package".into(),
                            Some("loaded, preload, path = \"\", cpath = \"\"; no loadlib, no searchers"),
                        ));
                        rows.push((
                            "require".into(),
                            Some("package.loaded, package.preload, then --modules DIR"),
                        ));
                    }
                    Item::Io => rows.push((
                        "io.open".into(),
                        Some("read-only (\"r\", \"rb\"), only files listed with --read"),
                    )),
                    Item::Library { name, members } => {
                        for m in *members {
                            let full = format!("{name}.{m}");
                            let note = moonjail::guard_note(&full);
                            rows.push((full, note));
                        }
                    }
                }
            }
            if json {
                let items: Vec<_> = rows
                    .iter()
                    .map(|(n, note)| serde_json::json!({"name": n, "guard": note}))
                    .collect();
                let doc =
                    serde_json::json!({"name": spec.name, "summary": spec.summary, "items": items});
                writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
            } else {
                writeln!(out, "profile {}: {}", spec.name, spec.summary)?;
                writeln!(
                    out,
                    "exposes {} names; nothing else exists in the sandbox.\n",
                    rows.len()
                )?;
                for (n, note) in rows {
                    match note {
                        Some(note) => writeln!(out, "  {n:<22} {note}")?,
                        None => writeln!(out, "  {n}")?,
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn alias_note(target: &str) -> &'static str {
    match target {
        "load" => "alias of load (Lua 5.1 spelling)",
        "table.unpack" => "alias of table.unpack (Lua 5.1 spelling)",
        _ => "alias",
    }
}
