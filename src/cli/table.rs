//! Plain aligned tables, as kubectl prints them: upper-case headers, columns padded to the
//! widest cell, no borders.

pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        format!("{}\n", padded.join("   ").trim_end())
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_align_to_the_widest_cell() {
        let rows = vec![
            vec!["istiod".to_owned(), "Available".to_owned()],
            vec!["ingress-gateway".to_owned(), "".to_owned()],
        ];
        assert_eq!(
            super::render(&["NAME", "PHASE"], &rows),
            "NAME              PHASE\nistiod            Available\ningress-gateway\n"
        );
    }
}
