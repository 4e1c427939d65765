//! Parsing the command lines the simulated shell accepts.
//!
//! Supported: words separated by blanks; single quotes; double quotes with
//! `\"`, `\\`, `\$` and `` \` `` escapes; backslash escapes outside quotes;
//! `~` and `~/…` at the start of a word; `#` comments; and lists joined by
//! `;`, newlines, `&&` and `||`, evaluated left to right as POSIX and-or
//! lists; and output redirection of a command's stdout to a file (`>
//! FILE`, `>> FILE`, one per command). Refused with a clear "not
//! supported" error rather than half implemented: pipes, input and other
//! descriptors' redirections (`<`, `2>`, `>&`), background jobs, variables
//! and command substitution, subshells. Glob characters are kept literally.

use std::fmt;

/// How a command is joined to the one before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Join {
    /// The first command, or after `;` / newline: always runs.
    Always,
    /// After `&&`: runs if the previous status is 0.
    And,
    /// After `||`: runs if the previous status is not 0.
    Or,
}

/// Where a command's stdout goes instead of the channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Redirect {
    /// The file as written (resolved by the shell).
    pub(super) target: String,
    /// `>>`: append instead of truncating.
    pub(super) append: bool,
}

/// One simple command: its words, its stdout redirection, and how it joins
/// the previous one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Simple {
    pub(super) join: Join,
    pub(super) words: Vec<String>,
    pub(super) redirect: Option<Redirect>,
}

/// Why a line was not accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum ParseError {
    /// Malformed: unterminated quote, operator without a command.
    Syntax(String),
    /// Valid shell, but more than the simulated shell does.
    Unsupported(&'static str),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Syntax(what) => write!(f, "Syntax error: {what}"),
            ParseError::Unsupported(what) => {
                write!(f, "{what} are not supported by the simulated VM's shell")
            }
        }
    }
}

/// The command being read.
#[derive(Default)]
struct Pending {
    words: Vec<String>,
    word: String,
    in_word: bool,
    redirect: Option<Redirect>,
    /// A `>` (`true`: `>>`) waits for its file name.
    wants_target: Option<bool>,
}

impl Pending {
    /// Ends the current word: a command word, or the redirection's file.
    fn end_word(&mut self) -> Result<(), ParseError> {
        if !self.in_word {
            return Ok(());
        }
        self.in_word = false;
        let word = std::mem::take(&mut self.word);
        match self.wants_target.take() {
            Some(append) => {
                if self.redirect.is_some() {
                    return Err(ParseError::Unsupported(
                        "several redirections of one command",
                    ));
                }
                self.redirect = Some(Redirect {
                    target: word,
                    append,
                });
            }
            None => self.words.push(word),
        }
        Ok(())
    }

    /// Ends the command; `None` when there was none.
    fn finish(&mut self, join: Join, op: &str) -> Result<Option<Simple>, ParseError> {
        self.end_word()?;
        if self.wants_target.is_some() {
            return Err(ParseError::Syntax(format!("\"{op}\" unexpected")));
        }
        if self.words.is_empty() {
            if self.redirect.is_some() {
                return Err(ParseError::Unsupported("redirections without a command"));
            }
            return Ok(None);
        }
        Ok(Some(Simple {
            join,
            words: std::mem::take(&mut self.words),
            redirect: self.redirect.take(),
        }))
    }
}

/// Splits `line` into simple commands. `home` replaces a leading `~`.
pub(super) fn parse(line: &str, home: &str) -> Result<Vec<Simple>, ParseError> {
    let mut commands = Vec::new();
    let mut p = Pending::default();
    let mut join = Join::Always;
    let mut chars = line.chars().peekable();

    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => p.end_word()?,
            '\'' => {
                p.in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => p.word.push(c),
                        None => {
                            return Err(ParseError::Syntax("unterminated quoted string".into()));
                        }
                    }
                }
            }
            '"' => {
                p.in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(e @ ('"' | '\\' | '$' | '`')) => p.word.push(e),
                            Some('\n') => {}
                            Some(other) => {
                                p.word.push('\\');
                                p.word.push(other);
                            }
                            None => {
                                return Err(ParseError::Syntax(
                                    "unterminated quoted string".into(),
                                ));
                            }
                        },
                        Some('$' | '`') => {
                            return Err(ParseError::Unsupported(
                                "variables and command substitution",
                            ));
                        }
                        Some(c) => p.word.push(c),
                        None => {
                            return Err(ParseError::Syntax("unterminated quoted string".into()));
                        }
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(c) => {
                    p.in_word = true;
                    p.word.push(c);
                }
                None => {}
            },
            '#' if !p.in_word => {
                // A comment runs to the end of the line.
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
                if let Some(command) = p.finish(join, "newline")? {
                    commands.push(command);
                    join = Join::Always;
                }
            }
            '~' if !p.in_word => {
                p.in_word = true;
                match chars.peek() {
                    None | Some('/' | ' ' | '\t' | '\n' | ';' | '&' | '|' | '>') => {
                        p.word.push_str(home);
                    }
                    Some(_) => p.word.push('~'),
                }
            }
            ';' | '\n' | '&' | '|' => {
                let (next, op) = match c {
                    ';' => (Join::Always, ";"),
                    '\n' => (Join::Always, "newline"),
                    '&' if chars.peek() == Some(&'&') => {
                        chars.next();
                        (Join::And, "&&")
                    }
                    '|' if chars.peek() == Some(&'|') => {
                        chars.next();
                        (Join::Or, "||")
                    }
                    '&' => return Err(ParseError::Unsupported("background jobs (&)")),
                    _ => return Err(ParseError::Unsupported("pipes (|)")),
                };
                match p.finish(join, op)? {
                    Some(command) => {
                        commands.push(command);
                        join = next;
                    }
                    // A newline after nothing is fine; an operator is not.
                    None if c == '\n' => {}
                    None => return Err(ParseError::Syntax(format!("\"{op}\" unexpected"))),
                }
            }
            '>' => {
                // `2>`: a descriptor number glued to the operator.
                if p.in_word
                    && p.wants_target.is_none()
                    && p.word.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(ParseError::Unsupported(
                        "redirections of other descriptors (2>, >&)",
                    ));
                }
                p.end_word()?;
                if p.wants_target.is_some() {
                    return Err(ParseError::Syntax("\">\" unexpected".into()));
                }
                let append = chars.peek() == Some(&'>');
                if append {
                    chars.next();
                }
                if matches!(chars.peek(), Some('&' | '|')) {
                    return Err(ParseError::Unsupported(
                        "redirections of other descriptors (2>, >&)",
                    ));
                }
                p.wants_target = Some(append);
            }
            '<' => return Err(ParseError::Unsupported("input redirections (<)")),
            '$' | '`' => {
                return Err(ParseError::Unsupported(
                    "variables and command substitution",
                ));
            }
            '(' | ')' => return Err(ParseError::Unsupported("subshells (( ))")),
            c => {
                p.in_word = true;
                p.word.push(c);
            }
        }
    }
    match p.finish(join, "end of file")? {
        Some(command) => commands.push(command),
        None if join != Join::Always => {
            return Err(ParseError::Syntax("end of file unexpected".into()));
        }
        None => {}
    }
    Ok(commands)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<Vec<String>> {
        parse(line, "/root")
            .unwrap()
            .into_iter()
            .map(|s| s.words)
            .collect()
    }

    #[test]
    fn quoting_follows_posix() {
        assert_eq!(
            words("echo 'a b'  c\\ d \"e\\\"f\" ''"),
            [["echo", "a b", "c d", "e\"f", ""]]
        );
        assert_eq!(words("echo 'it'\\''s'"), [["echo", "it's"]]);
        assert_eq!(
            words("echo ~ ~/bin a~b '~'"),
            [["echo", "/root", "/root/bin", "a~b", "~"]]
        );
        assert_eq!(words("echo a # comment"), [["echo", "a"]]);
        assert_eq!(words("echo *.txt"), [["echo", "*.txt"]]);
    }

    #[test]
    fn lists_record_how_each_command_joins() {
        let parsed = parse("a && b || c; d\ne;", "/").unwrap();
        let joins: Vec<Join> = parsed.iter().map(|s| s.join).collect();
        assert_eq!(
            joins,
            [
                Join::Always,
                Join::And,
                Join::Or,
                Join::Always,
                Join::Always
            ]
        );
        assert!(parse("", "/").unwrap().is_empty());
        assert!(parse("  # only a comment", "/").unwrap().is_empty());
    }

    #[test]
    fn stdout_redirections_are_recorded_per_command() {
        let parsed = parse("cat a b > 'c d' && echo x>>~/log; echo y", "/root").unwrap();
        let redirects: Vec<Option<Redirect>> = parsed.iter().map(|s| s.redirect.clone()).collect();
        assert_eq!(
            redirects,
            [
                Some(Redirect {
                    target: "c d".into(),
                    append: false
                }),
                Some(Redirect {
                    target: "/root/log".into(),
                    append: true
                }),
                None,
            ]
        );
        assert_eq!(parsed[0].words, ["cat", "a", "b"]);
        assert_eq!(parsed[1].words, ["echo", "x"]);
        // A digit that is not glued to `>` is an ordinary word.
        assert_eq!(parse("echo 2 > f", "/").unwrap()[0].words, ["echo", "2"]);
    }

    #[test]
    fn malformed_lines_are_syntax_errors() {
        for line in [
            "&& a",
            "a && && b",
            "a &&",
            "; a",
            "echo 'x",
            "echo \"x",
            "echo >",
            "echo > && b",
            "echo > > f",
        ] {
            assert!(
                matches!(parse(line, "/"), Err(ParseError::Syntax(_))),
                "{line}"
            );
        }
    }

    #[test]
    fn unsupported_features_are_named() {
        for (line, what) in [
            ("a | b", "pipes"),
            ("a < f", "input redirections"),
            ("a 2> f", "other descriptors"),
            ("a >&2", "other descriptors"),
            ("a > f > g", "several redirections"),
            ("> f", "without a command"),
            ("a &", "background"),
            ("echo $HOME", "variables"),
            ("echo \"$(id)\"", "variables"),
            ("(a)", "subshells"),
        ] {
            let err = parse(line, "/").unwrap_err();
            assert!(err.to_string().contains(what), "{line}: {err}");
        }
    }
}
