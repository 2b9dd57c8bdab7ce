//! The XML-RPC that Koji hubs speak: a call's body and a response's value (or fault).

use super::Outcome;
use quick_xml::events::Event;
use std::collections::HashMap;

/// An XML-RPC value, as much of it as Koji answers with.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum XmlRpc {
    Str(String),
    Int(i64),
    Bool(bool),
    Nil,
    Array(Vec<XmlRpc>),
    Struct(HashMap<String, XmlRpc>),
}

impl XmlRpc {
    pub(super) fn get(&self, key: &str) -> Option<&XmlRpc> {
        match self {
            Self::Struct(m) => m.get(key),
            _ => None,
        }
    }
    pub(super) fn str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }
}

pub(super) fn xmlrpc_call(method: &str, params: &[XmlRpc]) -> String {
    fn value(v: &XmlRpc) -> String {
        match v {
            XmlRpc::Str(s) => format!(
                "<value><string>{}</string></value>",
                quick_xml::escape::escape(s.as_str())
            ),
            XmlRpc::Int(i) => format!("<value><int>{i}</int></value>"),
            XmlRpc::Bool(b) => format!("<value><boolean>{}</boolean></value>", u8::from(*b)),
            XmlRpc::Nil => "<value><nil/></value>".into(),
            XmlRpc::Array(a) => format!(
                "<value><array><data>{}</data></array></value>",
                a.iter().map(value).collect::<String>()
            ),
            XmlRpc::Struct(m) => format!(
                "<value><struct>{}</struct></value>",
                m.iter()
                    .map(|(k, v)| format!("<member><name>{k}</name>{}</member>", value(v)))
                    .collect::<String>()
            ),
        }
    }
    format!(
        "<?xml version=\"1.0\"?><methodCall><methodName>{method}</methodName><params>{}</params></methodCall>",
        params
            .iter()
            .map(|p| format!("<param>{}</param>", value(p)))
            .collect::<String>()
    )
}

/// Parses a methodResponse: the value, or the fault string.
pub(super) fn xmlrpc_response(body: &[u8]) -> Outcome<XmlRpc> {
    let mut reader = quick_xml::Reader::from_reader(body);
    reader.config_mut().trim_text(true);
    let mut buf = Vec::new();
    // A stack of open containers; names of struct members wait on `names`.
    enum Frame {
        Array(Vec<XmlRpc>),
        Struct(HashMap<String, XmlRpc>),
    }
    let mut stack: Vec<Frame> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut scalar: Option<String> = None;
    let mut text = String::new();
    let mut result: Option<XmlRpc> = None;
    let mut fault = false;
    let mut in_value = false;
    let mut value_had_type = false;
    let place = |v: XmlRpc,
                 stack: &mut Vec<Frame>,
                 names: &mut Vec<String>,
                 result: &mut Option<XmlRpc>| {
        match stack.last_mut() {
            Some(Frame::Array(a)) => a.push(v),
            Some(Frame::Struct(m)) => {
                let k = names.pop().unwrap_or_default();
                m.insert(k, v);
            }
            None => *result = Some(v),
        }
    };
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| format!("bad XML-RPC: {e}"))?;
        match event {
            Event::Start(e) => match e.local_name().as_ref() {
                b"fault" => fault = true,
                b"value" => {
                    in_value = true;
                    value_had_type = false;
                    text.clear();
                }
                b"array" => {
                    value_had_type = true;
                    stack.push(Frame::Array(Vec::new()))
                }
                b"struct" => {
                    value_had_type = true;
                    stack.push(Frame::Struct(HashMap::new()))
                }
                b"name" => scalar = Some("name".into()),
                t @ (b"string" | b"int" | b"i4" | b"i8" | b"boolean" | b"double"
                | b"dateTime.iso8601" | b"base64") => {
                    value_had_type = true;
                    scalar = Some(String::from_utf8_lossy(t).into_owned());
                    text.clear();
                }
                _ => {}
            },
            Event::Empty(e) => match e.local_name().as_ref() {
                b"nil" => {
                    value_had_type = true;
                    place(XmlRpc::Nil, &mut stack, &mut names, &mut result)
                }
                b"string" => {
                    value_had_type = true;
                    place(
                        XmlRpc::Str(String::new()),
                        &mut stack,
                        &mut names,
                        &mut result,
                    )
                }
                b"value" => place(
                    XmlRpc::Str(String::new()),
                    &mut stack,
                    &mut names,
                    &mut result,
                ),
                _ => {}
            },
            Event::Text(t) => {
                let decoded = t.decode().map_err(|e| format!("bad XML-RPC text: {e}"))?;
                text.push_str(
                    &quick_xml::escape::unescape(&decoded)
                        .map_err(|e| format!("bad XML-RPC text: {e}"))?,
                );
            }
            Event::End(e) => match e.local_name().as_ref() {
                b"name" => {
                    names.push(std::mem::take(&mut text));
                    scalar = None;
                }
                b"array" | b"struct" => {
                    let v = match stack.pop() {
                        Some(Frame::Array(a)) => XmlRpc::Array(a),
                        Some(Frame::Struct(m)) => XmlRpc::Struct(m),
                        None => return Err("bad XML-RPC: unbalanced containers".into()),
                    };
                    place(v, &mut stack, &mut names, &mut result);
                }
                b"value" => {
                    if in_value && !value_had_type {
                        place(
                            XmlRpc::Str(std::mem::take(&mut text)),
                            &mut stack,
                            &mut names,
                            &mut result,
                        );
                    }
                    in_value = false;
                    value_had_type = true;
                }
                _ => {
                    if let Some(kind) = scalar.take() {
                        let raw = std::mem::take(&mut text);
                        let v = match kind.as_str() {
                            "int" | "i4" | "i8" => XmlRpc::Int(
                                raw.trim()
                                    .parse()
                                    .map_err(|_| format!("bad XML-RPC int {raw}"))?,
                            ),
                            "boolean" => XmlRpc::Bool(raw.trim() == "1"),
                            _ => XmlRpc::Str(raw),
                        };
                        place(v, &mut stack, &mut names, &mut result);
                    }
                }
            },
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    let value = result.ok_or("XML-RPC response without a value")?;
    if fault {
        let msg = value
            .get("faultString")
            .and_then(XmlRpc::str)
            .unwrap_or("unknown fault");
        return Err(format!("Koji fault: {msg}"));
    }
    Ok(value)
}
