//! A request's arguments, read by name with an error that names the call and the
//! argument when one is missing or of the wrong type.

use std::time::Duration;

use serde_json::{Map, Value};

/// The `args` object of one request, and the call it belongs to (for errors).
pub(super) struct Args<'a> {
    pub call: &'a str,
    pub map: &'a Map<String, Value>,
}

/// A time limit long enough to mean "none": the spec's `timeout` bounds the test.
const NO_LIMIT: Duration = Duration::from_secs(7 * 24 * 3600);

impl Args<'_> {
    fn wrong(&self, name: &str, what: &str) -> String {
        format!("{}: `{name}` must be {what}", self.call)
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    pub fn str(&self, name: &str) -> Result<&str, String> {
        self.get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| self.wrong(name, "a string"))
    }

    pub fn bool(&self, name: &str) -> Result<bool, String> {
        self.get(name)
            .and_then(Value::as_bool)
            .ok_or_else(|| self.wrong(name, "True or False"))
    }

    pub fn u64(&self, name: &str) -> Result<u64, String> {
        self.get(name)
            .and_then(Value::as_u64)
            .ok_or_else(|| self.wrong(name, "a whole number, 0 or more"))
    }

    pub fn f64_or(&self, name: &str, default: f64) -> Result<f64, String> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .ok_or_else(|| self.wrong(name, "a number, 0 or more")),
        }
    }

    pub fn port(&self, name: &str) -> Result<u16, String> {
        self.u64(name)?
            .try_into()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| self.wrong(name, "a port number, 1 to 65535"))
    }

    pub fn vlan(&self) -> Result<u8, String> {
        self.u64("vlan")?
            .try_into()
            .ok()
            .filter(|v| *v > 0)
            .ok_or_else(|| self.wrong("vlan", "a VLAN number, 1 to 255"))
    }

    /// `timeout` in seconds: `default` when absent, no limit when null is the
    /// default's meaning (`None`), more than zero otherwise.
    pub fn timeout(&self, default: Option<Duration>) -> Result<Duration, String> {
        match self.get("timeout") {
            None => Ok(default.unwrap_or(NO_LIMIT)),
            Some(v) => v
                .as_f64()
                .filter(|f| f.is_finite() && *f > 0.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| self.wrong("timeout", "a number of seconds, more than 0")),
        }
    }
}
