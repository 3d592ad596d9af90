//! The devnet runner's report: one row per node and finished window, written as CSV (and
//! drawn by [`super::plot`]).

use std::io::Write;
use std::path::Path;
use templar_protocol::node_status::NodeRole;

/// One row of the report: a node's figures at the end of a window.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub window: u64,
    pub node: String,
    pub uid: u16,
    pub role: NodeRole,
    pub loss: Option<f64>,
    pub score: Option<f64>,
    pub weight: Option<f64>,
}

pub fn write_csv(path: &Path, rows: &[Row]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    writeln!(f, "window,node,uid,role,loss,score,weight")?;
    let o = |v: Option<f64>| v.map_or(String::new(), |x| x.to_string());
    for r in rows {
        writeln!(
            f,
            "{},{},{},{},{},{},{}",
            r.window,
            r.node,
            r.uid,
            r.role,
            o(r.loss),
            o(r.score),
            o(r.weight)
        )?;
    }
    Ok(())
}
