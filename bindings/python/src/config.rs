//! `Sandbox(profile, **options)`: Python keyword arguments to a `SandboxBuilder`.
//!
//! Every option the CLI's `run` takes has a keyword here, spelled as the Python API
//! spells it. An omitted limit keeps the library's default; `None` removes it. Sizes and
//! durations take numbers (bytes, seconds) or the CLI's strings (`"16MiB"`, `"500ms"`).

use std::path::PathBuf;
use std::time::Duration;

use moonjail::{
    units, Determinism, HostFiles, Isolation, Limits, OutputOverflow, ProcessConfig, Profile,
    SandboxBuilder, ToolQuota, ToolSpec, WorkerPath,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyModule, PyString};

use crate::convert::to_json;
use crate::outcome::config_error;
use crate::tools::{call_python, ToolSlots};

/// Every keyword `Sandbox` takes, for the message about one it does not.
const OPTIONS: &[&str] = &[
    "memory_limit",
    "timeout",
    "instruction_limit",
    "output_limit",
    "output_overflow",
    "source_limit",
    "result_limit",
    "result_depth",
    "tools",
    "defer_tools",
    "tool_call_limit",
    "allow_http",
    "isolate",
    "workers",
    "worker",
    "deterministic",
    "seed",
    "timestamp",
    "modules",
    "read",
    "require_run",
    "require_table",
    "diagnostic",
    "prepared_states",
];

/// The builder for `profile` with `options` applied.
///
/// The Python callables of the tools go into `slots`, where the sandbox object can show
/// them to the garbage collector.
pub fn builder(
    py: Python<'_>,
    profile: &str,
    options: Option<&Bound<'_, PyDict>>,
    slots: &ToolSlots,
) -> PyResult<SandboxBuilder> {
    let profile: Profile = profile.parse().map_err(|e| config_error(py, &e))?;
    let mut b = moonjail::Sandbox::builder().profile(profile);
    let Some(options) = options else {
        return Ok(b);
    };
    for key in options.keys() {
        let key: String = key.extract()?;
        if !OPTIONS.contains(&key.as_str()) {
            let close = moonjail::nearest(&key, OPTIONS.iter().copied())
                .map(|o| format!(" (did you mean {o:?}?)"))
                .unwrap_or_default();
            return Err(PyTypeError::new_err(format!(
                "Sandbox() got an unexpected keyword argument {key:?}{close}"
            )));
        }
    }
    let get = |key: &str| options.get_item(key);

    let mut limits = Limits::default();
    if let Some(v) = get("memory_limit")? {
        limits.memory_bytes = size(&v, "memory_limit")?;
    }
    if let Some(v) = get("timeout")? {
        limits.timeout = duration(&v, "timeout")?;
    }
    if let Some(v) = get("instruction_limit")? {
        limits.instructions = count(&v, "instruction_limit")?;
    }
    if let Some(v) = get("output_limit")? {
        limits.output_bytes = size(&v, "output_limit")?;
    }
    if let Some(v) = get("source_limit")? {
        limits.source_bytes = size(&v, "source_limit")?;
    }
    if let Some(v) = get("result_limit")? {
        limits.result_bytes = size(&v, "result_limit")?;
    }
    if let Some(v) = get("result_depth")? {
        let depth = count(&v, "result_depth")?
            .ok_or_else(|| PyValueError::new_err("result_depth cannot be None"))?;
        limits.result_depth = usize::try_from(depth).unwrap_or(usize::MAX);
    }
    if let Some(v) = get("output_overflow")? {
        let text: String = v.extract()?;
        limits.output_overflow = match text.as_str() {
            "fail" => OutputOverflow::Fail,
            "truncate" => OutputOverflow::Truncate,
            other => {
                return Err(PyValueError::new_err(format!(
                    "output_overflow must be \"fail\" or \"truncate\", not {other:?}"
                )))
            }
        };
    }
    b = b.limits(limits);

    let mut quota = ToolQuota::default();
    if let Some(v) = get("tool_call_limit")? {
        let n = count(&v, "tool_call_limit")?;
        quota = quota.per_run(n.map(|n| u32::try_from(n).unwrap_or(u32::MAX)));
    }
    if let Some(tools) = get("tools")? {
        if !tools.is_none() {
            let tools = tools.cast::<PyDict>().map_err(|_| {
                PyTypeError::new_err(
                    "tools must be a dict of {\"name\": callable or moonjail.Tool}",
                )
            })?;
            for (name, value) in tools.iter() {
                let name: String = name
                    .extract()
                    .map_err(|_| PyTypeError::new_err("a tool's name must be a str"))?;
                let tool = ToolDef::read(py, &name, &value)?;
                if let Some(n) = tool.max_calls {
                    quota = quota.tool(name.clone(), n);
                }
                let index = slots.add(tool.func);
                let slots = slots.clone();
                b = b.tool_with_context(&name, move |ctx, args| {
                    call_python(&slots, index, ctx, args)
                });
                if let Some(spec) = tool.spec {
                    b = b.describe_tool(&name, spec);
                }
            }
        }
    }
    b = b.tool_quota(quota);
    if let Some(v) = get("defer_tools")? {
        if !v.is_none() {
            for name in strings(&v, "defer_tools")? {
                b = b.defer_tool(&name);
            }
        }
    }
    if let Some(v) = get("allow_http")? {
        for dest in strings(&v, "allow_http")? {
            b = b.allow_http(dest);
        }
    }

    let mut files = HostFiles::default();
    if let Some(v) = get("modules")? {
        if !v.is_none() {
            let dir = path(&v, "modules")?;
            if !dir.is_dir() {
                return Err(crate::outcome::config_error_text(
                    py,
                    &format!("modules: {} is not a directory", dir.display()),
                ));
            }
            files = files.modules_dir(dir);
        }
    }
    if let Some(v) = get("read")? {
        for p in strings(&v, "read")? {
            files = files.allow_read(p);
        }
    }
    b = b.host_files(files);

    if flag(get("deterministic")?, "deterministic")? {
        let seed = match get("seed")? {
            Some(v) => v.extract::<i64>()?,
            None => 0,
        };
        let timestamp = match get("timestamp")? {
            Some(v) => v.extract::<i64>()?,
            None => 0,
        };
        b = b.deterministic(Some(Determinism { timestamp, seed }));
    } else if get("seed")?.is_some() || get("timestamp")?.is_some() {
        return Err(PyValueError::new_err(
            "seed and timestamp apply with deterministic=True",
        ));
    }
    b = b
        .require_run(flag(get("require_run")?, "require_run")?)
        .require_table_result(flag(get("require_table")?, "require_table")?)
        .diagnostic(flag(get("diagnostic")?, "diagnostic")?);
    if let Some(v) = get("prepared_states")? {
        let n = count(&v, "prepared_states")?.unwrap_or(0);
        b = b.prepared_states(usize::try_from(n).unwrap_or(usize::MAX));
    }

    if flag(get("isolate")?, "isolate")? {
        let mut process = ProcessConfig::builder().worker(worker_path(py, get("worker")?)?);
        if let Some(v) = get("workers")? {
            let n = count(&v, "workers")?
                .ok_or_else(|| PyValueError::new_err("workers cannot be None"))?;
            process = process.pool_size(usize::try_from(n).unwrap_or(usize::MAX));
        }
        let process = process.build().map_err(|e| config_error(py, &e))?;
        b = b.isolation(Isolation::Process(process));
    } else if get("workers")?.is_some() || get("worker")?.is_some() {
        return Err(PyValueError::new_err(
            "workers and worker apply with isolate=True",
        ));
    }
    Ok(b)
}

/// A tool given as a callable or a `moonjail.Tool`.
struct ToolDef {
    func: Py<PyAny>,
    spec: Option<ToolSpec>,
    max_calls: Option<u32>,
}

impl ToolDef {
    fn read(py: Python<'_>, name: &str, value: &Bound<'_, PyAny>) -> PyResult<ToolDef> {
        static TOOL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        let class = TOOL.get_or_try_init(py, || {
            Ok::<_, PyErr>(
                PyModule::import(py, "moonjail._tool")?
                    .getattr("Tool")?
                    .unbind(),
            )
        })?;
        let value = if value.is_instance(class.bind(py))? {
            value.clone()
        } else if value.is_callable() {
            // A plain callable is a Tool with nothing but its docstring.
            class.bind(py).call1((value,))?
        } else {
            return Err(PyTypeError::new_err(format!(
                "tool {name:?} must be a callable or a moonjail.Tool"
            )));
        };
        let func = value.getattr("func")?;
        let mut spec = ToolSpec::new();
        let mut described = false;
        let description = value.getattr("description")?;
        if !description.is_none() {
            spec = spec.description(description.extract::<String>()?);
            described = true;
        }
        for (attr, what) in [("parameters", "parameters"), ("returns", "returns")] {
            let schema = value.getattr(attr)?;
            if !schema.is_none() {
                let json = to_json(&schema, &format_args!("tool {name:?}'s {what} schema"))?;
                spec = if attr == "parameters" {
                    spec.parameters(json)
                } else {
                    spec.returns(json)
                };
                described = true;
            }
        }
        let max_calls = value.getattr("max_calls")?;
        let max_calls = if max_calls.is_none() {
            None
        } else {
            let n = count(&max_calls, &format!("tool {name:?}: max_calls"))?;
            Some(n.map_or(u32::MAX, |n| u32::try_from(n).unwrap_or(u32::MAX)))
        };
        Ok(ToolDef {
            func: func.unbind(),
            spec: described.then_some(spec),
            max_calls,
        })
    }
}

/// The worker executable: `worker=` if given, else `$MOONJAIL_WORKER`, else the
/// `moonjail-worker` installed inside the package.
pub fn worker_path(py: Python<'_>, given: Option<Bound<'_, PyAny>>) -> PyResult<WorkerPath> {
    if let Some(v) = given.filter(|v| !v.is_none()) {
        let worker = path(&v, "worker")?;
        if !worker.is_file() {
            return Err(crate::outcome::config_error_text(
                py,
                &format!("isolation: worker {} is not a file", worker.display()),
            ));
        }
        return Ok(WorkerPath::Path(worker));
    }
    if std::env::var_os("MOONJAIL_WORKER").is_some_and(|p| !p.is_empty()) {
        return Ok(WorkerPath::Auto);
    }
    let file: String = py.import("moonjail")?.getattr("__file__")?.extract()?;
    let beside = PathBuf::from(file).with_file_name("moonjail-worker");
    if !beside.is_file() {
        return Err(crate::outcome::config_error_text(
            py,
            &format!(
                "isolation: no worker executable at {} (install the package with pip, \
                 which builds it, or set MOONJAIL_WORKER or worker=)",
                beside.display()
            ),
        ));
    }
    Ok(WorkerPath::Path(beside))
}

fn flag(value: Option<Bound<'_, PyAny>>, name: &str) -> PyResult<bool> {
    match value {
        None => Ok(false),
        Some(v) if v.is_none() => Ok(false),
        Some(v) => v
            .cast::<PyBool>()
            .map(|b| b.is_true())
            .map_err(|_| PyTypeError::new_err(format!("{name} must be True or False"))),
    }
}

/// A size: bytes as an int, or the CLI's text (`"16MiB"`); None for no limit.
fn size(value: &Bound<'_, PyAny>, name: &str) -> PyResult<Option<usize>> {
    if value.is_none() {
        return Ok(None);
    }
    if let Ok(s) = value.cast::<PyString>() {
        let text = s.to_cow()?;
        let n =
            units::parse_size(&text).map_err(|e| PyValueError::new_err(format!("{name}: {e}")))?;
        return Ok(Some(usize::try_from(n).unwrap_or(usize::MAX)));
    }
    if value.cast::<PyInt>().is_ok() && value.cast::<PyBool>().is_err() {
        let n: i128 = value.extract()?;
        if n < 0 {
            return Err(PyValueError::new_err(format!("{name} cannot be negative")));
        }
        return Ok(Some(usize::try_from(n).unwrap_or(usize::MAX)));
    }
    Err(PyTypeError::new_err(format!(
        "{name} must be a number of bytes, a size such as \"16MiB\", or None"
    )))
}

/// A count: an int, or text the CLI accepts (`"1e6"`); None for no limit.
fn count(value: &Bound<'_, PyAny>, name: &str) -> PyResult<Option<u64>> {
    if value.is_none() {
        return Ok(None);
    }
    if value.cast::<PyInt>().is_ok() && value.cast::<PyBool>().is_err() {
        let n: i128 = value.extract()?;
        return u64::try_from(n)
            .map(Some)
            .map_err(|_| PyValueError::new_err(format!("{name} must be at least 0")));
    }
    if let Ok(s) = value.cast::<PyString>() {
        let text = s.to_cow()?;
        if is_none_text(&text) {
            return Ok(None);
        }
        if let Ok(n) = text.trim().parse::<u64>() {
            return Ok(Some(n));
        }
        if let Ok(f) = text.trim().parse::<f64>() {
            if f.is_finite() && f >= 0.0 && f.fract() == 0.0 && f < 1.8e19 {
                return Ok(Some(f as u64));
            }
        }
        return Err(PyValueError::new_err(format!(
            "{name}: cannot read {text:?} as a whole number"
        )));
    }
    Err(PyTypeError::new_err(format!(
        "{name} must be an int or None"
    )))
}

/// A duration: seconds as a number, a `datetime.timedelta`, or the CLI's text
/// (`"500ms"`); None for no limit.
pub(crate) fn duration(value: &Bound<'_, PyAny>, name: &str) -> PyResult<Option<Duration>> {
    if value.is_none() {
        return Ok(None);
    }
    if let Ok(s) = value.cast::<PyString>() {
        let text = s.to_cow()?;
        if is_none_text(&text) {
            return Ok(None);
        }
        return units::parse_duration(&text)
            .map(Some)
            .map_err(|e| PyValueError::new_err(format!("{name}: {e}")));
    }
    let seconds: f64 = if value.cast::<PyBool>().is_ok() {
        return Err(PyTypeError::new_err(format!(
            "{name} must be seconds, not a bool"
        )));
    } else if value.cast::<PyInt>().is_ok() || value.cast::<PyFloat>().is_ok() {
        value.extract()?
    } else if value.hasattr("total_seconds")? {
        value.call_method0("total_seconds")?.extract()?
    } else {
        return Err(PyTypeError::new_err(format!(
            "{name} must be seconds (int or float), a timedelta, a duration such as \
             \"500ms\", or None"
        )));
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(PyValueError::new_err(format!(
            "{name} must be a finite number of seconds, at least 0"
        )));
    }
    Duration::try_from_secs_f64(seconds)
        .map(Some)
        .map_err(|e| PyValueError::new_err(format!("{name}: {e}")))
}

/// The CLI's spelling of "no limit".
fn is_none_text(text: &str) -> bool {
    text.trim().eq_ignore_ascii_case("none")
}

fn strings(value: &Bound<'_, PyAny>, name: &str) -> PyResult<Vec<String>> {
    if value.is_none() {
        return Ok(Vec::new());
    }
    if value.cast::<PyString>().is_ok() {
        return Ok(vec![value.extract()?]);
    }
    value
        .try_iter()?
        .map(|item| {
            item?
                .extract::<String>()
                .map_err(|_| PyTypeError::new_err(format!("{name} must be a list of str")))
        })
        .collect()
}

fn path(value: &Bound<'_, PyAny>, name: &str) -> PyResult<PathBuf> {
    let fspath = value
        .call_method0("__fspath__")
        .unwrap_or_else(|_| value.clone());
    fspath
        .extract::<String>()
        .map(PathBuf::from)
        .map_err(|_| PyTypeError::new_err(format!("{name} must be a path (str or os.PathLike)")))
}
