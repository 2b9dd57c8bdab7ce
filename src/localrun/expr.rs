//! GitHub Actions expressions, as far as kfleet's workflows use them: literals, context paths
//! (`inputs.x`, `vars.x`, `secrets.x`, `steps.id.outputs.k`, `github.token`, `matrix.x`),
//! `!`, `==`, `!=`, `&&`, `||` and parentheses, with GitHub's truthiness and its
//! case-insensitive string comparison, and the status functions `success()`, `failure()`,
//! `always()` and `cancelled()`. Anything else is an error that names it.

use std::collections::BTreeMap;

/// A value: GitHub's null, booleans, strings (numbers stay strings here).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Str(String),
}

impl Value {
    fn truthy(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Str(s) => !s.is_empty() && s != "0",
        }
    }

    /// How the value reads when substituted into a string.
    pub fn render(&self) -> String {
        match self {
            Value::Null => String::new(),
            Value::Bool(b) => b.to_string(),
            Value::Str(s) => s.clone(),
        }
    }

    fn loosely_equal(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Str(a), Value::Str(b)) => a.eq_ignore_ascii_case(b),
            (a, b) => a == b,
        }
    }
}

/// Context values by dotted path (`inputs.kernel_version`); a missing key of a known context is
/// null, as on GitHub.
#[derive(Clone, Debug, Default)]
pub struct Contexts {
    values: BTreeMap<String, String>,
    /// Whether a step of the job has failed (what `success()` and `failure()` answer).
    failed: bool,
}

/// Contexts whose missing keys are null rather than an error.
const KNOWN: &[&str] = &[
    "inputs", "vars", "secrets", "steps", "github", "matrix", "env",
];

impl Contexts {
    pub fn set(&mut self, path: &str, value: impl Into<String>) {
        self.values.insert(path.to_string(), value.into());
    }

    /// A step of the job failed: from now on `success()` is false and `failure()` true.
    pub fn set_failed(&mut self) {
        self.failed = true;
    }

    fn lookup(&self, path: &str) -> Result<Value, String> {
        if let Some(v) = self.values.get(path) {
            return Ok(Value::Str(v.clone()));
        }
        let context = path.split('.').next().unwrap_or("");
        if KNOWN.contains(&context) {
            Ok(Value::Null)
        } else {
            Err(format!("unknown context '{path}'"))
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Str(String),
    Word(String),
    Op(&'static str),
}

fn tokens(src: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = src.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(format!("unterminated string in '{src}'")),
                    Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                        s.push('\'');
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(&ch) => {
                        s.push(ch);
                        i += 1;
                    }
                }
            }
            out.push(Token::Str(s));
        } else if let Some(op) = ["==", "!=", "&&", "||"]
            .into_iter()
            .find(|op| src[char_offset(&chars, i)..].starts_with(op))
        {
            out.push(Token::Op(op));
            i += 2;
        } else if let Some(op) = ["!", "(", ")"]
            .into_iter()
            .find(|op| c == op.chars().next().unwrap_or(' '))
        {
            out.push(Token::Op(op));
            i += 1;
        } else if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | '-' | '.'))
            {
                i += 1;
            }
            out.push(Token::Word(chars[start..i].iter().collect()));
        } else {
            return Err(format!("'{c}' is not supported in '{src}'"));
        }
    }
    Ok(out)
}

fn char_offset(chars: &[char], i: usize) -> usize {
    chars[..i].iter().map(|c| c.len_utf8()).sum()
}

struct Parser<'a> {
    tokens: Vec<Token>,
    at: usize,
    contexts: &'a Contexts,
    src: &'a str,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn or(&mut self) -> Result<Value, String> {
        let mut left = self.and()?;
        while self.peek() == Some(&Token::Op("||")) {
            self.at += 1;
            let right = self.and()?;
            if !left.truthy() {
                left = right;
            }
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Value, String> {
        let mut left = self.comparison()?;
        while self.peek() == Some(&Token::Op("&&")) {
            self.at += 1;
            let right = self.comparison()?;
            if left.truthy() {
                left = right;
            }
        }
        Ok(left)
    }

    fn comparison(&mut self) -> Result<Value, String> {
        let left = self.unary()?;
        match self.peek() {
            Some(Token::Op("==")) => {
                self.at += 1;
                let right = self.unary()?;
                Ok(Value::Bool(left.loosely_equal(&right)))
            }
            Some(Token::Op("!=")) => {
                self.at += 1;
                let right = self.unary()?;
                Ok(Value::Bool(!left.loosely_equal(&right)))
            }
            _ => Ok(left),
        }
    }

    fn unary(&mut self) -> Result<Value, String> {
        if self.peek() == Some(&Token::Op("!")) {
            self.at += 1;
            return Ok(Value::Bool(!self.unary()?.truthy()));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Value, String> {
        let token = self
            .tokens
            .get(self.at)
            .cloned()
            .ok_or_else(|| format!("'{}' ends early", self.src))?;
        self.at += 1;
        match token {
            Token::Str(s) => Ok(Value::Str(s)),
            Token::Op("(") => {
                let v = self.or()?;
                if self.peek() != Some(&Token::Op(")")) {
                    return Err(format!("missing ')' in '{}'", self.src));
                }
                self.at += 1;
                Ok(v)
            }
            Token::Word(w)
                if self.peek() == Some(&Token::Op("("))
                    && self.tokens.get(self.at + 1) == Some(&Token::Op(")"))
                    && STATUS_FUNCTIONS.contains(&w.as_str()) =>
            {
                self.at += 2;
                Ok(Value::Bool(match w.as_str() {
                    "success" => !self.contexts.failed,
                    "failure" => self.contexts.failed,
                    "always" => true,
                    // A local job is stopped, not cancelled: no step runs after that.
                    _ => false,
                }))
            }
            Token::Word(w) if self.peek() == Some(&Token::Op("(")) => Err(format!(
                "the function {w}() is not supported by the local runner (in '{}')",
                self.src
            )),
            Token::Word(w) => match w.as_str() {
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                "null" => Ok(Value::Null),
                number if number.chars().all(|c| c.is_ascii_digit() || c == '.') => {
                    Ok(Value::Str(number.to_string()))
                }
                path => self.contexts.lookup(path),
            },
            Token::Op(op) => Err(format!("unexpected '{op}' in '{}'", self.src)),
        }
    }
}

/// Evaluates one expression (the text inside `${{ }}`, or an `if:`).
pub fn evaluate(src: &str, contexts: &Contexts) -> Result<Value, String> {
    let mut parser = Parser {
        tokens: tokens(src)?,
        at: 0,
        contexts,
        src,
    };
    let value = parser.or()?;
    if parser.at != parser.tokens.len() {
        return Err(format!("unexpected text after the expression in '{src}'"));
    }
    Ok(value)
}

/// Replaces every `${{ expr }}` in `text` with its value.
pub fn substitute(text: &str, contexts: &Contexts) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 3..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("unterminated ${{{{ in '{text}'"))?;
        out.push_str(&evaluate(after[..end].trim(), contexts)?.render());
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// GitHub's job status functions.
const STATUS_FUNCTIONS: &[&str] = &["success", "failure", "always", "cancelled"];

/// Whether a step with the `if:` condition `text` (none: `None`) runs: as on GitHub, a condition
/// without a status function is `success() && (text)`, so after a failure only the steps that
/// ask for `always()` or `failure()` run.
pub fn step_runs(text: Option<&str>, contexts: &Contexts) -> Result<bool, String> {
    let Some(text) = text else {
        return Ok(!contexts.failed);
    };
    let t = text.trim();
    let inner = t
        .strip_prefix("${{")
        .and_then(|s| s.strip_suffix("}}"))
        .unwrap_or(t)
        .trim();
    let asks_status = tokens(inner)?.windows(2).any(|w| {
        matches!(&w[0], Token::Word(f) if STATUS_FUNCTIONS.contains(&f.as_str()))
            && w[1] == Token::Op("(")
    });
    if !asks_status && contexts.failed {
        return Ok(false);
    }
    Ok(evaluate(inner, contexts)?.truthy())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Contexts {
        let mut c = Contexts::default();
        c.set("inputs.architecture", "aarch64");
        c.set("vars.KFLEET_MODULE", "");
        c.set("steps.existing.outputs.exists", "true");
        c
    }

    #[test]
    fn the_workflows_expressions_evaluate_as_on_github() {
        let c = ctx();
        assert_eq!(
            substitute("${{ vars.KFLEET_MODULE || 'kdriver' }}", &c).unwrap(),
            "kdriver"
        );
        assert_eq!(
            substitute(
                "${{ inputs.architecture == 'aarch64' && (vars.R || 'ubuntu-24.04-arm') || 'x' }}",
                &c
            )
            .unwrap(),
            "ubuntu-24.04-arm"
        );
        assert!(!step_runs(Some("steps.existing.outputs.exists != 'true'"), &c).unwrap());
        assert!(step_runs(Some("${{ steps.other.outputs.exists != 'TRUE' }}"), &c).unwrap());
        assert_eq!(substitute("a-${{ secrets.NONE }}-b", &c).unwrap(), "a--b");
        assert_eq!(substitute("'it''s'", &c).unwrap(), "'it''s'");
        assert_eq!(evaluate("'it''s'", &c).unwrap().render(), "it's");
    }

    #[test]
    fn after_a_failure_only_steps_that_ask_run() {
        let mut c = ctx();
        assert!(step_runs(None, &c).unwrap());
        assert!(step_runs(Some("always()"), &c).unwrap());
        assert!(!step_runs(Some("failure()"), &c).unwrap());
        c.set_failed();
        assert!(!step_runs(None, &c).unwrap());
        assert!(!step_runs(Some("inputs.architecture == 'aarch64'"), &c).unwrap());
        assert!(step_runs(Some("${{ always() }}"), &c).unwrap());
        assert!(step_runs(Some("failure() && inputs.architecture == 'aarch64'"), &c).unwrap());
        assert!(!step_runs(Some("success()"), &c).unwrap());
        assert!(!step_runs(Some("cancelled()"), &c).unwrap());
    }

    #[test]
    fn what_it_cannot_evaluate_is_named() {
        let c = ctx();
        assert!(
            evaluate("fromJSON(inputs.x)", &c)
                .unwrap_err()
                .contains("fromJSON")
        );
        assert!(evaluate("runner.os", &c).unwrap_err().contains("runner.os"));
        assert!(substitute("${{ inputs.x", &c).is_err());
        assert!(evaluate("'open", &c).is_err());
        assert!(evaluate("a b", &c).is_err());
    }
}
