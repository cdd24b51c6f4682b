//! Aligned plain-text tables for people.

/// Columns with a header, padded to the widest cell.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (as many cells as columns).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row, columns two spaces apart.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(width(cell));
                }
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                let cell = clean(cell);
                if i + 1 == row.len() {
                    line.push_str(&cell);
                } else {
                    let pad = widths
                        .get(i)
                        .copied()
                        .unwrap_or(0)
                        .saturating_sub(width(&cell));
                    line.push_str(&cell);
                    line.push_str(&" ".repeat(pad + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// `key  value` lines, keys aligned.
    pub fn pairs(pairs: &[(&str, String)]) -> String {
        let w = pairs.iter().map(|(k, _)| width(k)).max().unwrap_or(0);
        pairs
            .iter()
            .map(|(k, v)| format!("{k:<w$}  {}\n", clean(v)))
            .collect()
    }
}

fn width(s: &str) -> usize {
    s.chars().count()
}

/// A cell on one line: control characters (newlines, escapes) become spaces.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up() {
        let mut t = Table::new(&["ID", "URL"]);
        t.row(vec!["ep_1".into(), "https://a".into()]);
        t.row(vec!["ep_long".into(), "x\ny".into()]);
        assert_eq!(
            t.render(),
            "ID       URL\nep_1     https://a\nep_long  x y\n"
        );
        assert_eq!(
            Table::pairs(&[("id", "1".into()), ("status", "ok".into())]),
            "id      1\nstatus  ok\n"
        );
    }
}
