//! Results and their Markdown rendering.

use std::fmt::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Met,
    Missed,
    /// A figure with no target (context for the others).
    Info,
}

#[derive(Debug, Clone)]
pub struct Row {
    pub measure: String,
    pub figure: String,
    pub baseline: String,
    pub ratio: String,
    pub target: String,
    pub verdict: Verdict,
}

impl Row {
    pub fn info(measure: impl Into<String>, figure: impl Into<String>) -> Row {
        Row {
            measure: measure.into(),
            figure: figure.into(),
            baseline: "—".into(),
            ratio: "—".into(),
            target: "—".into(),
            verdict: Verdict::Info,
        }
    }

    pub fn compared(
        measure: impl Into<String>,
        figure: impl Into<String>,
        baseline: impl Into<String>,
        ratio: impl Into<String>,
    ) -> Row {
        Row {
            measure: measure.into(),
            figure: figure.into(),
            baseline: baseline.into(),
            ratio: ratio.into(),
            target: "—".into(),
            verdict: Verdict::Info,
        }
    }

    pub fn target(mut self, target: impl Into<String>, met: bool) -> Row {
        self.target = target.into();
        self.verdict = if met { Verdict::Met } else { Verdict::Missed };
        self
    }
}

#[derive(Debug, Clone, Default)]
pub struct Section {
    pub title: String,
    /// What was done, in a sentence or two (above the table).
    pub setup: String,
    pub rows: Vec<Row>,
    /// Extra Markdown below the table (breakdowns, plans).
    pub notes: Vec<String>,
    /// Set when the scenario could not run to the end.
    pub error: Option<String>,
}

impl Section {
    pub fn new(title: &str) -> Section {
        Section {
            title: title.into(),
            ..Section::default()
        }
    }

    pub fn targets(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(|r| r.verdict != Verdict::Info)
    }
}

pub fn table(section: &Section) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| measure | figure | baseline (same run) | ratio | target | result |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---|---|");
    for r in &section.rows {
        let verdict = match r.verdict {
            Verdict::Met => "**met**",
            Verdict::Missed => "**missed**",
            Verdict::Info => "",
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            r.measure, r.figure, r.baseline, r.ratio, r.target, verdict
        );
    }
    s
}

pub fn summary(sections: &[Section]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "| scenario | target | figure | result |");
    let _ = writeln!(s, "|---|---|---:|---|");
    for sec in sections {
        for r in sec.targets() {
            let _ = writeln!(
                s,
                "| {} | {} | {} ({}) | {} |",
                sec.title,
                r.target,
                r.figure,
                r.measure,
                if r.verdict == Verdict::Met {
                    "**met**"
                } else {
                    "**missed**"
                }
            );
        }
        if let Some(e) = &sec.error {
            let _ = writeln!(
                s,
                "| {} | — | did not complete: {} | **error** |",
                sec.title, e
            );
        }
    }
    s
}

pub fn render_section(section: &Section) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## {}\n", section.title);
    if !section.setup.is_empty() {
        let _ = writeln!(s, "{}\n", section.setup);
    }
    if let Some(e) = &section.error {
        let _ = writeln!(s, "**This scenario did not complete:** `{e}`\n");
    }
    if !section.rows.is_empty() {
        let _ = writeln!(s, "{}", table(section));
    }
    for n in &section.notes {
        let _ = writeln!(s, "{n}\n");
    }
    s
}
