//! `moonjail doctor`: which isolation layers this machine can apply, and one real
//! isolated run.

use std::io::Write;
use std::process::ExitCode;

use crate::output;

#[cfg(target_os = "linux")]
use moonjail::{Isolation, ProcessConfig, Sandbox};

/// `moonjail doctor`: the probe's findings, then one real isolated run.
#[cfg(target_os = "linux")]
pub fn doctor(json: bool) -> anyhow::Result<ExitCode> {
    use moonjail::worker::Availability;

    let capabilities = moonjail::worker::probe();
    let layers: Vec<_> = capabilities
        .layers
        .iter()
        .map(|(layer, availability)| {
            let (status, detail) = match availability {
                Availability::Available { detail } => ("available", detail.clone()),
                Availability::Unavailable { reason } => ("unavailable", reason.clone()),
                Availability::NotApplicable { reason } => ("not_applicable", reason.clone()),
                other => ("unknown", other.to_string()),
            };
            (layer.name(), status, detail, availability.is_usable())
        })
        .collect();
    let all_usable = capabilities.all_usable();

    // One run in a real worker, every layer required, as `run --isolate` would do it.
    let started = std::time::Instant::now();
    let worker = ProcessConfig::builder()
        .pool_size(1)
        .prespawn(0)
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|config| {
            Ok(Sandbox::builder()
                .isolation(Isolation::Process(config))
                .build()?)
        })
        .map(|sandbox| sandbox.run("return 6 * 7", &serde_json::Value::Null));
    let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
    let worker_error = match &worker {
        Ok(outcome) => match &outcome.result {
            Ok(v) if *v == serde_json::json!(42) => None,
            Ok(v) => Some(format!("the worker answered {v} instead of 42")),
            Err(e) => Some(format!("{}: {}", e.kind, e.message)),
        },
        Err(e) => Some(format!("{e:#}")),
    };
    let ok = all_usable && worker_error.is_none();
    let mut out = output::stdout();

    if json {
        let doc = serde_json::json!({
            "ok": ok,
            "kernel": capabilities.kernel_release,
            "running_as_root": capabilities.running_as_root,
            "landlock_abi": capabilities.landlock_abi,
            "layers": layers.iter().map(|(name, status, detail, usable)| serde_json::json!({
                "layer": name, "status": status, "usable": usable, "detail": detail,
            })).collect::<Vec<_>>(),
            "worker": {
                "ok": worker_error.is_none(),
                "error": worker_error,
                "ms": (elapsed_ms * 1e3).round() / 1e3,
            },
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        writeln!(
            out,
            "kernel {}, running as {}",
            capabilities.kernel_release,
            if capabilities.running_as_root {
                "root"
            } else {
                "an unprivileged user"
            }
        )?;
        for (name, status, detail, _) in &layers {
            let status = status.replace('_', " ");
            writeln!(out, "  {name:<18} {status:<15} {detail}")?;
        }
        match &worker_error {
            None => writeln!(
                out,
                "worker: started, locked down and ran a script in {elapsed_ms:.1} ms"
            )?,
            Some(e) => writeln!(out, "worker: FAILED: {e}")?,
        }
        if ok {
            writeln!(
                out,
                "every layer is available: `moonjail run --isolate` applies them all"
            )?;
        } else if !all_usable {
            writeln!(
                out,
                "some layers are unavailable: `run --isolate` fails unless they are listed \
                 in --allow-missing"
            )?;
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::FAILED)
    })
}

/// `moonjail doctor` where there is no isolation to probe.
#[cfg(not(target_os = "linux"))]
pub fn doctor(json: bool) -> anyhow::Result<ExitCode> {
    let mut out = output::stdout();
    if json {
        writeln!(
            out,
            "{}",
            serde_json::json!({"ok": false, "error": "isolation needs Linux"})
        )?;
    } else {
        writeln!(
            out,
            "isolation layers exist on Linux only: `run --isolate` is not available"
        )?;
    }
    Ok(ExitCode::from(crate::FAILED))
}
