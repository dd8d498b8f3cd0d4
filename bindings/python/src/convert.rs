//! Python values to JSON and back.
//!
//! Hand-written rather than `pythonize`: the sandbox needs a depth bound (a list that
//! contains itself must be an error, not a stack overflow), `json.dumps`'s rules for what
//! counts as JSON (no NaN, `int` keys written as text, `bool` before `int`), and errors
//! that name where in the value the offending part is (`input["items"][3]`), none of
//! which a generic serde bridge gives. Both directions are a few dozen lines.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::{Map, Number, Value as Json};

/// The deepest value converted: one past the deepest result a sandbox accepts, so the
/// library's own depth check (with its own message) sees any deeper input first.
pub const MAX_DEPTH: usize = moonjail::Limits::MAX_RESULT_DEPTH + 1;

/// `value` as JSON, by `json.dumps`'s rules; `what` names the value in errors.
/// (`what` is only formatted on failure.)
pub fn to_json(value: &Bound<'_, PyAny>, what: &dyn std::fmt::Display) -> PyResult<Json> {
    to_json_at(value, 0).map_err(|e| e.into_py_err(what))
}

/// Where in a value a conversion failed, built only on failure: each level adds its
/// step on the way out, so a value that converts pays nothing for its path.
struct Failure {
    steps: Vec<Step>,
    error: PyErr,
    /// Whether `error`'s message is about the value (a `TypeError`/`ValueError` made
    /// here, to be prefixed with the path) or an error Python raised (kept as is).
    ours: Option<(bool, String)>,
}

enum Step {
    Key(String),
    Index(usize),
}

impl Failure {
    fn type_error(message: String) -> Failure {
        Failure {
            steps: Vec::new(),
            error: PyTypeError::new_err(""),
            ours: Some((true, message)),
        }
    }

    fn value_error(message: String) -> Failure {
        Failure {
            steps: Vec::new(),
            error: PyValueError::new_err(""),
            ours: Some((false, message)),
        }
    }

    fn at(mut self, step: Step) -> Failure {
        self.steps.push(step);
        self
    }

    fn into_py_err(self, what: &dyn std::fmt::Display) -> PyErr {
        let mut path = what.to_string();
        // A value that contains itself fails a thousand levels down: name the first and
        // the last steps of such a path, not all of them.
        let steps: Vec<&Step> = self.steps.iter().rev().collect();
        for (i, step) in steps.iter().enumerate() {
            if steps.len() > 16 && i == 8 {
                path.push_str(&format!("[... {} more ...]", steps.len() - 16));
            }
            if steps.len() > 16 && (8..steps.len() - 8).contains(&i) {
                continue;
            }
            match step {
                Step::Key(k) => path.push_str(&format!("[{k:?}]")),
                Step::Index(i) => path.push_str(&format!("[{i}]")),
            }
        }
        match self.ours {
            Some((true, message)) => PyTypeError::new_err(format!("{path} {message}")),
            Some((false, message)) => PyValueError::new_err(format!("{path} {message}")),
            None => self.error,
        }
    }
}

impl From<PyErr> for Failure {
    fn from(error: PyErr) -> Failure {
        Failure {
            steps: Vec::new(),
            error,
            ours: None,
        }
    }
}

fn to_json_at(value: &Bound<'_, PyAny>, depth: usize) -> Result<Json, Failure> {
    if depth > MAX_DEPTH {
        return Err(Failure::value_error(format!(
            "nests more than {MAX_DEPTH} levels deep (does it contain itself?)"
        )));
    }
    if value.is_none() {
        return Ok(Json::Null);
    }
    // `bool` is a subclass of `int`: test it first.
    if let Ok(b) = value.cast::<PyBool>() {
        return Ok(Json::Bool(b.is_true()));
    }
    if let Ok(s) = value.cast::<PyString>() {
        return Ok(Json::String(s.to_cow()?.into_owned()));
    }
    if value.cast::<PyInt>().is_ok() {
        if let Ok(i) = value.extract::<i64>() {
            return Ok(Json::Number(i.into()));
        }
        // The JSON rule of the whole project: an integer beyond 64 signed bits is a
        // float (as `--input 18446744073709551616` reads); one beyond a float's range
        // is refused.
        return match value.extract::<f64>() {
            Ok(f) if f.is_finite() => Ok(Number::from_f64(f).map_or(Json::Null, Json::Number)),
            _ => Err(Failure::value_error(format!(
                "is an integer too large for a Lua number: {}...",
                value.str()?.to_cow()?.chars().take(20).collect::<String>()
            ))),
        };
    }
    if let Ok(f) = value.cast::<PyFloat>() {
        let f = f.value();
        return Number::from_f64(f)
            .map(Json::Number)
            .ok_or_else(|| Failure::value_error(format!("is {f}, which JSON cannot carry")));
    }
    if let Ok(d) = value.cast::<PyDict>() {
        let mut map = Map::new();
        for (k, v) in d.iter() {
            let key = dict_key(&k)?;
            match to_json_at(&v, depth + 1) {
                Ok(item) => {
                    map.insert(key, item);
                }
                Err(e) => return Err(e.at(Step::Key(key))),
            }
        }
        return Ok(Json::Object(map));
    }
    if let Ok(l) = value.cast::<PyList>() {
        return sequence(l.iter(), l.len(), depth);
    }
    if let Ok(t) = value.cast::<PyTuple>() {
        return sequence(t.iter(), t.len(), depth);
    }
    let type_name = value.get_type().name()?;
    Err(Failure::type_error(format!(
        "is of type {type_name}, which is not JSON (use None, bool, int, float, str, list, \
         tuple or dict)"
    )))
}

fn sequence<'py>(
    items: impl Iterator<Item = Bound<'py, PyAny>>,
    len: usize,
    depth: usize,
) -> Result<Json, Failure> {
    let mut out = Vec::with_capacity(len);
    for (i, item) in items.enumerate() {
        out.push(to_json_at(&item, depth + 1).map_err(|e| e.at(Step::Index(i)))?);
    }
    Ok(Json::Array(out))
}

/// A dict key as `json.dumps` writes it: a `str` as is, an `int` as its digits.
fn dict_key(key: &Bound<'_, PyAny>) -> Result<String, Failure> {
    if let Ok(s) = key.cast::<PyString>() {
        return Ok(s.to_cow()?.into_owned());
    }
    if key.cast::<PyInt>().is_ok() && key.cast::<PyBool>().is_err() {
        return Ok(key.str()?.to_cow()?.into_owned());
    }
    let type_name = key.get_type().name()?;
    Err(Failure::type_error(format!(
        "has a key of type {type_name}; JSON object keys are str (or int)"
    )))
}

/// A JSON value as a Python object: `null` is `None`, integers are `int`, other numbers
/// `float`, objects `dict`.
pub fn to_py<'py>(py: Python<'py>, value: &Json) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Json::Null => py.None().into_bound(py),
        Json::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                PyFloat::new(py, n.as_f64().unwrap_or(f64::NAN)).into_any()
            }
        }
        Json::String(s) => PyString::new(py, s).into_any(),
        Json::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_py(py, item)?)?;
            }
            list.into_any()
        }
        Json::Object(map) => {
            let dict = PyDict::new(py);
            for (k, v) in map {
                dict.set_item(k, to_py(py, v)?)?;
            }
            dict.into_any()
        }
    })
}
