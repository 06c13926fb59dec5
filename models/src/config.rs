//! Reading the JSON configs diffusers writes (`config.json`): typed getters with defaults for
//! absent keys, and errors that name the model, the key and the offending value.

use serde_json::{Map, Value};
use tensor::{Error, Result};

/// The error for a config value we cannot use: names the model, the key, the value and what
/// would have been accepted.
pub fn bad_value(model: &str, key: &str, value: impl std::fmt::Display, expected: &str) -> Error {
    Error::msg(format!(
        "{model} config: `{key}` = {value} is not supported (expected {expected})"
    ))
}

/// Checks diffusers' per-level lists: `block_out_channels` non-empty and positive, and each of
/// `lists` (e.g. `down_block_types`) with one entry per level.
pub fn check_levels(model: &str, widths: &[usize], lists: &[(&str, &[String])]) -> Result<()> {
    if widths.is_empty() || widths.contains(&0) {
        let expected = "a non-empty list of positive widths";
        return Err(bad_value(
            model,
            "block_out_channels",
            format!("{widths:?}"),
            expected,
        ));
    }
    for &width in widths {
        check_sizes(model, &[("block_out_channels", width)])?;
    }
    for (key, list) in lists {
        if list.len() != widths.len() {
            let expected = format!("{} entries, one per block_out_channels", widths.len());
            return Err(bad_value(model, key, format!("{list:?}"), &expected));
        }
    }
    Ok(())
}

/// Checks that each size `(key, value)` is at least 1 (a layer of zero channels makes no model,
/// and its initialisation bound 1/√fan_in would be infinite) and within
/// [`tensor::limits::MODEL_PARAMS`] (a layer that wide holds more parameters than that, and
/// products of such sizes could overflow before the parameters are counted).
pub fn check_sizes(model: &str, values: &[(&str, usize)]) -> Result<()> {
    for &(key, value) in values {
        if value == 0 {
            return Err(bad_value(model, key, 0, "at least 1"));
        }
        tensor::limits::MODEL_PARAMS.check(value as u128, format!("{model} config: `{key}`"))?;
    }
    Ok(())
}

/// A parsed config object. Keys starting with `_` (`_class_name`, `_diffusers_version`) are
/// diffusers' bookkeeping and ignored; any other key outside `known` is an error.
pub struct JsonConfig {
    model: &'static str,
    map: Map<String, Value>,
}

impl JsonConfig {
    /// Parses `json` (an object) for `model`, refusing keys outside `known`.
    pub fn parse(model: &'static str, json: &str, known: &[&str]) -> Result<Self> {
        let value: Value = serde_json::from_str(json)
            .map_err(|e| Error::msg(format!("{model} config: invalid JSON: {e}")))?;
        let Value::Object(map) = value else {
            return Err(Error::msg(format!(
                "{model} config: expected a JSON object, found {value}"
            )));
        };
        if let Some(key) = map
            .keys()
            .find(|k| !k.starts_with('_') && !known.contains(&k.as_str()))
        {
            return Err(Error::msg(format!(
                "{model} config: unknown key `{key}` = {}",
                map[key]
            )));
        }
        Ok(JsonConfig { model, map })
    }

    /// The model name used in errors.
    pub fn model(&self) -> &'static str {
        self.model
    }

    /// `Some(value)` unless the key is absent; `Some(None)` for an explicit `null`.
    fn raw(&self, key: &str) -> Option<Option<&Value>> {
        self.map.get(key).map(|v| (!v.is_null()).then_some(v))
    }

    fn typed<T>(
        &self,
        key: &str,
        default: Option<T>,
        expected: &str,
        conv: impl Fn(&Value) -> Option<T>,
    ) -> Result<Option<T>> {
        match self.raw(key) {
            None => Ok(default),
            Some(None) => Ok(None),
            Some(Some(v)) => conv(v)
                .map(Some)
                .ok_or_else(|| bad_value(self.model, key, v, expected)),
        }
    }

    fn required<T>(&self, key: &str, value: Option<T>, expected: &str) -> Result<T> {
        value.ok_or_else(|| bad_value(self.model, key, "null", expected))
    }

    /// A non-negative integer that may be `null` (then `None`).
    pub fn opt_usize(&self, key: &str, default: Option<usize>) -> Result<Option<usize>> {
        self.typed(key, default, "a non-negative integer", |v| {
            v.as_u64().map(|x| x as usize)
        })
    }

    /// A non-negative integer.
    pub fn usize(&self, key: &str, default: usize) -> Result<usize> {
        let v = self.opt_usize(key, Some(default))?;
        self.required(key, v, "a non-negative integer")
    }

    /// A number.
    pub fn f64(&self, key: &str, default: f64) -> Result<f64> {
        let v = self.typed(key, Some(default), "a number", Value::as_f64)?;
        self.required(key, v, "a number")
    }

    /// A number that may be `null`.
    pub fn opt_f64(&self, key: &str, default: Option<f64>) -> Result<Option<f64>> {
        self.typed(key, default, "a number", Value::as_f64)
    }

    /// A boolean.
    pub fn bool(&self, key: &str, default: bool) -> Result<bool> {
        let v = self.typed(key, Some(default), "true or false", Value::as_bool)?;
        self.required(key, v, "true or false")
    }

    /// A string that may be `null`.
    pub fn opt_string(&self, key: &str, default: Option<&str>) -> Result<Option<String>> {
        self.typed(key, default.map(str::to_string), "a string", |v| {
            v.as_str().map(str::to_string)
        })
    }

    /// A string.
    pub fn string(&self, key: &str, default: &str) -> Result<String> {
        let v = self.opt_string(key, Some(default))?;
        self.required(key, v, "a string")
    }

    /// A list of non-negative integers.
    pub fn usize_list(&self, key: &str, default: &[usize]) -> Result<Vec<usize>> {
        let v = self.typed(key, Some(default.to_vec()), "a list of integers", |v| {
            v.as_array()?
                .iter()
                .map(|x| x.as_u64().map(|x| x as usize))
                .collect()
        })?;
        self.required(key, v, "a list of integers")
    }

    /// A list of numbers.
    pub fn f64_list(&self, key: &str, default: &[f64]) -> Result<Vec<f64>> {
        let v = self.typed(key, Some(default.to_vec()), "a list of numbers", |v| {
            v.as_array()?.iter().map(|x| x.as_f64()).collect()
        })?;
        self.required(key, v, "a list of numbers")
    }

    /// A list of strings.
    pub fn string_list(&self, key: &str, default: &[&str]) -> Result<Vec<String>> {
        let default = default.iter().map(|s| s.to_string()).collect();
        let v = self.typed(key, Some(default), "a list of strings", |v| {
            v.as_array()?
                .iter()
                .map(|x| x.as_str().map(str::to_string))
                .collect()
        })?;
        self.required(key, v, "a list of strings")
    }

    /// A sample size: an integer (square) or `[height, width]`; may be `null`.
    pub fn opt_size(&self, key: &str) -> Result<Option<(usize, usize)>> {
        self.typed(key, None, "an integer or [height, width]", |v| {
            if let Some(n) = v.as_u64() {
                return Some((n as usize, n as usize));
            }
            match v.as_array()?.as_slice() {
                [h, w] => Some((h.as_u64()? as usize, w.as_u64()? as usize)),
                _ => None,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_nulls_and_errors() {
        let c = JsonConfig::parse(
            "M",
            r#"{"_class_name": "M", "a": 3, "b": null, "c": "x", "d": [1, 2]}"#,
            &["a", "b", "c", "d", "e"],
        )
        .unwrap();
        assert_eq!(c.usize("a", 0).unwrap(), 3);
        assert_eq!(c.opt_usize("b", Some(7)).unwrap(), None);
        assert_eq!(c.usize("e", 5).unwrap(), 5);
        assert_eq!(c.usize_list("d", &[]).unwrap(), vec![1, 2]);
        let err = c.usize("c", 0).unwrap_err().to_string();
        assert!(err.contains("`c`") && err.contains("\"x\""), "{err}");
        let err = JsonConfig::parse("M", r#"{"zz": 1}"#, &["a"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("`zz`"), "{err}");
    }
}
