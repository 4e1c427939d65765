//! Just enough HCL2 to read a packer template: blocks with labels,
//! attributes whose values are strings (with `${…}` kept for later),
//! numbers, booleans, references (`var.x`), lists, objects, heredocs and,
//! kept as raw text, anything else (function calls, operators). Comments
//! `#`, `//` and `/* */`.

use std::fmt;

/// An attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A quoted string or heredoc, `${…}` not yet expanded.
    Str(String),
    Num(String),
    Bool(bool),
    /// A bare reference such as `var.disk_size`.
    Ref(String),
    List(Vec<Value>),
    Object(Vec<(String, Value)>),
    /// An expression the simulation does not evaluate, as written.
    Other(String),
}

/// A block: `type "label" … { body }`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Block {
    pub kind: String,
    pub labels: Vec<String>,
    pub body: Body,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Body {
    pub attrs: Vec<(String, Value)>,
    pub blocks: Vec<Block>,
}

impl Body {
    pub fn attr(&self, name: &str) -> Option<&Value> {
        self.attrs.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    pub fn blocks<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Block> + 'a {
        self.blocks.iter().filter(move |b| b.kind == kind)
    }
}

/// Why a file is not HCL the simulation reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(String),
    Punct(char),
    Newline,
}

fn lex(text: &str) -> Result<Vec<(Tok, usize)>, Error> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1;
    let err = |line, message: &str| Error {
        line,
        message: message.to_string(),
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\n' => {
                out.push((Tok::Newline, line));
                line += 1;
                i += 1;
            }
            ' ' | '\t' | '\r' => i += 1,
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if chars.get(i + 1) == Some(&'/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if chars.get(i + 1) == Some(&'*') => {
                i += 2;
                while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                    if chars[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
                if i >= chars.len() {
                    return Err(err(line, "unterminated comment"));
                }
                i += 2;
            }
            '"' => {
                let start = line;
                let mut s = String::new();
                i += 1;
                // `${ … }` may hold quotes: track its depth.
                let mut depth = 0usize;
                loop {
                    let Some(&c) = chars.get(i) else {
                        return Err(err(start, "unterminated string"));
                    };
                    match c {
                        '"' if depth == 0 => break,
                        '\n' => return Err(err(line, "newline in a quoted string")),
                        '\\' => {
                            let e = chars.get(i + 1).copied().unwrap_or('\\');
                            s.push(match e {
                                'n' => '\n',
                                't' => '\t',
                                other => other,
                            });
                            i += 1;
                        }
                        '$' if chars.get(i + 1) == Some(&'{') => {
                            depth += 1;
                            s.push_str("${");
                            i += 1;
                        }
                        '}' if depth > 0 => {
                            depth -= 1;
                            s.push('}');
                        }
                        other => s.push(other),
                    }
                    i += 1;
                }
                i += 1;
                out.push((Tok::Str(s), start));
            }
            '<' if chars.get(i + 1) == Some(&'<') => {
                // Heredoc: <<EOF or <<-EOF, then lines until the marker.
                let start = line;
                i += 2;
                if chars.get(i) == Some(&'-') {
                    i += 1;
                }
                let mut marker = String::new();
                while i < chars.len() && chars[i] != '\n' {
                    marker.push(chars[i]);
                    i += 1;
                }
                let marker = marker.trim().to_string();
                if marker.is_empty() {
                    return Err(err(start, "heredoc without a marker"));
                }
                let rest: String = chars[i..].iter().collect();
                let mut body = String::new();
                let mut consumed = 0;
                let mut found = false;
                for l in rest.split_inclusive('\n').skip(1) {
                    consumed += l.chars().count();
                    line += 1;
                    if l.trim() == marker {
                        found = true;
                        break;
                    }
                    body.push_str(l);
                }
                if !found {
                    return Err(err(start, "unterminated heredoc"));
                }
                // The newline ending the `<<EOF` line.
                i += 1 + consumed;
                line += 1;
                out.push((Tok::Str(body), start));
                // The marker's line ended the attribute.
                out.push((Tok::Newline, line - 1));
            }
            c if c.is_ascii_digit() => {
                let mut s = String::new();
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    s.push(chars[i]);
                    i += 1;
                }
                out.push((Tok::Num(s), line));
            }
            c if c.is_alphabetic() || c == '_' => {
                let mut s = String::new();
                while i < chars.len()
                    && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '-' | '.'))
                {
                    s.push(chars[i]);
                    i += 1;
                }
                out.push((Tok::Ident(s), line));
            }
            other => {
                out.push((Tok::Punct(other), line));
                i += 1;
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at).map(|(t, _)| t)
    }

    fn line(&self) -> usize {
        self.toks
            .get(self.at)
            .or(self.toks.last())
            .map_or(1, |(_, l)| *l)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.at).map(|(t, _)| t.clone());
        self.at += 1;
        t
    }

    fn error<T>(&self, message: impl Into<String>) -> Result<T, Error> {
        Err(Error {
            line: self.line(),
            message: message.into(),
        })
    }

    fn skip_newlines(&mut self) {
        while self.peek() == Some(&Tok::Newline) {
            self.at += 1;
        }
    }

    /// A body up to `}` (`nested`) or the end of the file.
    fn body(&mut self, nested: bool) -> Result<Body, Error> {
        let mut body = Body::default();
        loop {
            self.skip_newlines();
            match self.next() {
                None if nested => return self.error("missing `}`"),
                None => return Ok(body),
                Some(Tok::Punct('}')) if nested => return Ok(body),
                Some(Tok::Ident(name)) => match self.peek() {
                    Some(Tok::Punct('=')) => {
                        self.at += 1;
                        let value = self.value()?;
                        body.attrs.push((name, value));
                    }
                    _ => {
                        let mut labels = Vec::new();
                        loop {
                            match self.next() {
                                Some(Tok::Str(s) | Tok::Ident(s)) => labels.push(s),
                                Some(Tok::Punct('{')) => break,
                                _ => return self.error(format!("malformed `{name}` block")),
                            }
                        }
                        let inner = self.body(true)?;
                        body.blocks.push(Block {
                            kind: name,
                            labels,
                            body: inner,
                        });
                    }
                },
                Some(_) => return self.error("expected an attribute or a block"),
            }
        }
    }

    fn value(&mut self) -> Result<Value, Error> {
        let first = self.primary()?;
        // Anything else on the line (operators, calls) is kept as text.
        let mut extra = String::new();
        let mut depth = 0i32;
        while let Some(t) = self.peek() {
            match t {
                Tok::Newline | Tok::Punct(',') if depth == 0 => break,
                Tok::Punct('}' | ']') if depth == 0 => break,
                Tok::Punct('(' | '[' | '{') => depth += 1,
                Tok::Punct(')' | ']' | '}') => depth -= 1,
                _ => {}
            }
            extra.push_str(&token_text(t));
            self.at += 1;
        }
        if extra.is_empty() {
            Ok(first)
        } else {
            Ok(Value::Other(format!("{} {extra}", value_text(&first))))
        }
    }

    fn primary(&mut self) -> Result<Value, Error> {
        match self.next() {
            Some(Tok::Str(s)) => Ok(Value::Str(s)),
            Some(Tok::Num(n)) => Ok(Value::Num(n)),
            Some(Tok::Ident(i)) if i == "true" => Ok(Value::Bool(true)),
            Some(Tok::Ident(i)) if i == "false" => Ok(Value::Bool(false)),
            Some(Tok::Ident(i)) => {
                if self.peek() == Some(&Tok::Punct('(')) {
                    let mut text = i;
                    let mut depth = 0;
                    while let Some(t) = self.next() {
                        text.push_str(&token_text(&t));
                        match t {
                            Tok::Punct('(') => depth += 1,
                            Tok::Punct(')') => {
                                depth -= 1;
                                if depth == 0 {
                                    break;
                                }
                            }
                            _ => {}
                        }
                    }
                    Ok(Value::Other(text))
                } else {
                    Ok(Value::Ref(i))
                }
            }
            Some(Tok::Punct('[')) => {
                let mut items = Vec::new();
                loop {
                    self.skip_newlines();
                    if self.peek() == Some(&Tok::Punct(']')) {
                        self.at += 1;
                        return Ok(Value::List(items));
                    }
                    items.push(self.value()?);
                    self.skip_newlines();
                    match self.next() {
                        Some(Tok::Punct(',')) => {}
                        Some(Tok::Punct(']')) => return Ok(Value::List(items)),
                        _ => return self.error("expected `,` or `]` in a list"),
                    }
                }
            }
            Some(Tok::Punct('{')) => {
                let mut fields = Vec::new();
                loop {
                    self.skip_newlines();
                    let key = match self.next() {
                        Some(Tok::Punct('}')) => return Ok(Value::Object(fields)),
                        Some(Tok::Ident(k) | Tok::Str(k)) => k,
                        _ => return self.error("expected a key in an object"),
                    };
                    match self.next() {
                        Some(Tok::Punct('=' | ':')) => {}
                        _ => return self.error(format!("expected `=` after `{key}`")),
                    }
                    let value = self.value()?;
                    fields.push((key, value));
                    if self.peek() == Some(&Tok::Punct(',')) {
                        self.at += 1;
                    }
                }
            }
            _ => self.error("expected a value"),
        }
    }
}

fn token_text(t: &Tok) -> String {
    match t {
        Tok::Ident(s) | Tok::Num(s) => s.clone(),
        Tok::Str(s) => format!("{s:?}"),
        Tok::Punct(c) => c.to_string(),
        Tok::Newline => " ".into(),
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::Str(s) => format!("{s:?}"),
        Value::Num(s) | Value::Ref(s) | Value::Other(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::List(_) => "[…]".into(),
        Value::Object(_) => "{…}".into(),
    }
}

/// Parses a whole file.
pub fn parse(text: &str) -> Result<Body, Error> {
    let toks = lex(text)?;
    Parser { toks, at: 0 }.body(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_packer_template() {
        let body = parse(
            r#"
packer {
  required_plugins {
    qemu = {
      version = ">= 1.1.0"
      source  = "github.com/hashicorp/qemu"
    }
  }
}
# a comment
variable "disk_size" { default = "3G" } // trailing
source "qemu" "debian-12" {
  output_directory = "images/debian-12"
  vm_name          = "${var.name}.qcow2"
  disk_size        = var.disk_size
  boot_command     = ["<wait>", "x"]
  memory           = 2048 * 2
  user_data        = <<EOF
#cloud-config
EOF
  headless = true
}
build {
  sources = ["source.qemu.debian-12"]
  provisioner "shell" { scripts = ["scripts/cleanup.sh"] }
}
"#,
        )
        .unwrap();
        let source = body.blocks("source").next().unwrap();
        assert_eq!(source.labels, ["qemu", "debian-12"]);
        let b = &source.body;
        assert_eq!(
            b.attr("vm_name"),
            Some(&Value::Str("${var.name}.qcow2".into()))
        );
        assert_eq!(
            b.attr("disk_size"),
            Some(&Value::Ref("var.disk_size".into()))
        );
        assert_eq!(b.attr("headless"), Some(&Value::Bool(true)));
        assert!(matches!(b.attr("memory"), Some(Value::Other(_))));
        assert_eq!(
            b.attr("user_data"),
            Some(&Value::Str("#cloud-config\n".into()))
        );
        let packer = body.blocks("packer").next().unwrap();
        let plugins = packer.body.blocks("required_plugins").next().unwrap();
        assert!(matches!(plugins.body.attr("qemu"), Some(Value::Object(f)) if f.len() == 2));
        let build = body.blocks("build").next().unwrap();
        assert_eq!(build.body.blocks("provisioner").count(), 1);
    }

    #[test]
    fn malformed_input_names_its_line() {
        assert_eq!(parse("a = \"x\n").unwrap_err().line, 1);
        assert_eq!(parse("\n\nsource \"q\" {\n").unwrap_err().line, 3);
        assert!(parse("x = ").is_err());
    }
}
