//! Parsing the command lines the simulated shell accepts.
//!
//! Supported: words separated by blanks; single quotes; double quotes with
//! `\"`, `\\`, `\$` and `` \` `` escapes; backslash escapes outside quotes;
//! `~` and `~/…` at the start of a word; `#` comments; and lists joined by
//! `;`, newlines, `&&` and `||`, evaluated left to right as POSIX and-or
//! lists. Refused with a clear "not supported" error rather than half
//! implemented: pipes, redirections, background jobs, variables and command
//! substitution, subshells. Glob characters are kept literally.

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

/// One simple command: its words, and how it joins the previous one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Simple {
    pub(super) join: Join,
    pub(super) words: Vec<String>,
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

/// Splits `line` into simple commands. `home` replaces a leading `~`.
pub(super) fn parse(line: &str, home: &str) -> Result<Vec<Simple>, ParseError> {
    let mut commands = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut join = Join::Always;
    let mut chars = line.chars().peekable();

    // Ends the current command, recording how the next one joins.
    let mut finish = |words: &mut Vec<String>,
                      join: &mut Join,
                      next: Join,
                      op: &str|
     -> Result<(), ParseError> {
        if words.is_empty() {
            return Err(ParseError::Syntax(format!("\"{op}\" unexpected")));
        }
        commands.push(Simple {
            join: *join,
            words: std::mem::take(words),
        });
        *join = next;
        Ok(())
    };

    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => {
                            return Err(ParseError::Syntax("unterminated quoted string".into()));
                        }
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(e @ ('"' | '\\' | '$' | '`')) => word.push(e),
                            Some('\n') => {}
                            Some(other) => {
                                word.push('\\');
                                word.push(other);
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
                        Some(c) => word.push(c),
                        None => {
                            return Err(ParseError::Syntax("unterminated quoted string".into()));
                        }
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(c) => {
                    in_word = true;
                    word.push(c);
                }
                None => {}
            },
            '#' if !in_word => {
                // A comment runs to the end of the line.
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
                if !words.is_empty() {
                    finish(&mut words, &mut join, Join::Always, "newline")?;
                }
            }
            '~' if !in_word => {
                in_word = true;
                match chars.peek() {
                    None | Some('/' | ' ' | '\t' | '\n' | ';' | '&' | '|') => word.push_str(home),
                    Some(_) => word.push('~'),
                }
            }
            ';' | '\n' | '&' | '|' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
                match c {
                    ';' => finish(&mut words, &mut join, Join::Always, ";")?,
                    '\n' => {
                        if !words.is_empty() {
                            finish(&mut words, &mut join, Join::Always, "newline")?;
                        }
                    }
                    '&' if chars.peek() == Some(&'&') => {
                        chars.next();
                        finish(&mut words, &mut join, Join::And, "&&")?;
                    }
                    '|' if chars.peek() == Some(&'|') => {
                        chars.next();
                        finish(&mut words, &mut join, Join::Or, "||")?;
                    }
                    '&' => return Err(ParseError::Unsupported("background jobs (&)")),
                    _ => return Err(ParseError::Unsupported("pipes (|)")),
                }
            }
            '>' | '<' => return Err(ParseError::Unsupported("redirections (<, >)")),
            '$' | '`' => {
                return Err(ParseError::Unsupported(
                    "variables and command substitution",
                ));
            }
            '(' | ')' => return Err(ParseError::Unsupported("subshells (( ))")),
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    if !words.is_empty() {
        commands.push(Simple { join, words });
    } else if join != Join::Always {
        return Err(ParseError::Syntax("end of file unexpected".into()));
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
    fn malformed_lines_are_syntax_errors() {
        for line in ["&& a", "a && && b", "a &&", "; a", "echo 'x", "echo \"x"] {
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
            ("a > f", "redirections"),
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
