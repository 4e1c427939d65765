//! The one table `--bench perf` prints: `row | figure | value | goal | met?`,
//! then footnotes.

use std::time::Duration;

/// Whether a figure meets its goal.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Met {
    Yes,
    No,
    /// A figure with no goal.
    None,
}

pub struct Line {
    pub row: String,
    pub figure: String,
    pub value: String,
    pub goal: String,
    pub met: Met,
}

#[derive(Default)]
pub struct Table {
    lines: Vec<Line>,
    notes: Vec<(String, String)>,
}

impl Table {
    /// A figure without a goal.
    pub fn add(&mut self, row: &str, figure: impl Into<String>, value: impl Into<String>) {
        self.lines.push(Line {
            row: row.to_string(),
            figure: figure.into(),
            value: value.into(),
            goal: String::new(),
            met: Met::None,
        });
    }

    /// A figure with its goal and whether it is met.
    pub fn goal(
        &mut self,
        row: &str,
        figure: impl Into<String>,
        value: impl Into<String>,
        goal: impl Into<String>,
        met: bool,
    ) {
        self.lines.push(Line {
            row: row.to_string(),
            figure: figure.into(),
            value: value.into(),
            goal: goal.into(),
            met: if met { Met::Yes } else { Met::No },
        });
    }

    /// A footnote, printed as `[key] text` (figures name it as `[key]`).
    pub fn note(&mut self, key: &str, text: impl Into<String>) {
        self.notes.push((key.to_string(), text.into()));
    }

    pub fn render(&self) -> String {
        let head = ["row", "figure", "value", "goal", "met?"];
        let cells: Vec<[String; 5]> = self
            .lines
            .iter()
            .map(|l| {
                [
                    l.row.clone(),
                    l.figure.clone(),
                    l.value.clone(),
                    l.goal.clone(),
                    match l.met {
                        Met::Yes => "yes".into(),
                        Met::No => "NO".into(),
                        Met::None => String::new(),
                    },
                ]
            })
            .collect();
        let mut width = head.map(str::len);
        for row in &cells {
            for (w, c) in width.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cols: [&str; 5]| {
            let mut s = String::new();
            for (i, (c, w)) in cols.iter().zip(width).enumerate() {
                let pad = w.saturating_sub(c.chars().count());
                // Values right-aligned, text left-aligned.
                if i == 2 {
                    s.push_str(&" ".repeat(pad));
                    s.push_str(c);
                } else {
                    s.push_str(c);
                    s.push_str(&" ".repeat(pad));
                }
                if i < 4 {
                    s.push_str(" | ");
                }
            }
            s.trim_end().to_string() + "\n"
        };
        let mut out = line(head);
        out.push_str(
            &width
                .iter()
                .map(|w| "-".repeat(*w))
                .collect::<Vec<_>>()
                .join("-+-"),
        );
        out.push('\n');
        for row in &cells {
            out.push_str(&line(row.each_ref().map(String::as_str)));
        }
        for (key, text) in &self.notes {
            out.push_str(&format!("[{key}] {text}\n"));
        }
        out
    }
}

/// Seconds, three decimals; milliseconds below 0.1 s.
pub fn secs(d: Duration) -> String {
    if d < Duration::from_millis(100) {
        format!("{:.2} ms", d.as_secs_f64() * 1000.0)
    } else {
        format!("{:.3} s", d.as_secs_f64())
    }
}

/// `a / b` as `1.23x`.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { f64::INFINITY }
}

pub fn x(r: f64) -> String {
    format!("{r:.2}x")
}
