//! Metadata contexts: which ones an export offers, and the query rules of
//! `NBD_OPT_LIST_META_CONTEXT` / `NBD_OPT_SET_META_CONTEXT`.
//!
//! Contexts offered, in this order (the order fixes the ids a SET hands out):
//! * `base:allocation` on every export: holes and zeroes of the backing;
//! * `qemu:dirty-bitmap:<leaf>` for each leaf [`Export::dirty_bitmaps`] names. flashd names
//!   a FlashCopy relationship's change-recording bitmaps `<source>-<target>.src` and `.tgt`
//!   (e.g. `qemu:dirty-bitmap:1000-1001.src`), 64 KiB granule, on both volumes of the pair.
//!
//! Query syntax (the spec leaves all but `base:` to the namespace; ours, in one place):
//! * a query must contain `:` (namespace, colon, leaf); one without is `NBD_REP_ERR_INVALID`;
//! * LIST: an empty query list lists every context; a query ending in `:` is a prefix
//!   wildcard (`base:`, `qemu:`, `qemu:dirty-bitmap:`); any other query matches one name
//!   exactly. Unknown namespaces and unknown names match nothing (the spec: ignore them);
//! * SET: exact names only; wildcards select nothing (the spec: `base:` MUST be ignored by
//!   SET); an empty query list selects nothing. At most [`proto::MAX_CONTEXTS`] are selected.
//!
//! A selected dirty-bitmap context is a *name*: each `NBD_CMD_BLOCK_STATUS` looks the bitmap
//! up again, so a client sees the bitmap as it is at that moment (after a resync, the bits set
//! since the resync), and a query on a withdrawn relationship fails with an error chunk.

use super::{Export, proto};

/// What a selected context reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextKind {
    Allocation,
    /// A dirty bitmap by its leaf name (after [`proto::DIRTY_BITMAP_PREFIX`]).
    DirtyBitmap(String),
}

/// A context selected for the session, with the id the server assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaContext {
    pub id: u32,
    pub name: String,
    pub kind: ContextKind,
}

/// Why a query list was refused (the option gets `NBD_REP_ERR_INVALID` or `_TOO_BIG`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryError {
    Invalid(String),
    TooBig,
}

/// Every context `export` offers, with ids 1.. in a fixed order.
pub fn offered(export: &dyn Export) -> Vec<MetaContext> {
    let mut out =
        vec![MetaContext { id: 1, name: proto::CONTEXT_ALLOCATION.to_owned(), kind: ContextKind::Allocation }];
    for leaf in export.dirty_bitmaps() {
        let id = u32::try_from(out.len() + 1).unwrap_or(u32::MAX);
        let name = format!("{}{leaf}", proto::DIRTY_BITMAP_PREFIX);
        out.push(MetaContext { id, name, kind: ContextKind::DirtyBitmap(leaf) });
    }
    out
}

fn check_syntax(queries: &[String]) -> Result<(), QueryError> {
    match queries.iter().find(|q| !q.contains(':')) {
        Some(q) => Err(QueryError::Invalid(format!("query {q:?} has no namespace"))),
        None => Ok(()),
    }
}

/// LIST: the names of the offered contexts matching `queries` (ids are reserved: 0).
pub fn list(offered: &[MetaContext], queries: &[String]) -> Result<Vec<String>, QueryError> {
    check_syntax(queries)?;
    let matches = |name: &str| {
        queries.is_empty()
            || queries.iter().any(|q| if q.ends_with(':') { name.starts_with(q.as_str()) } else { q == name })
    };
    Ok(offered.iter().filter(|c| matches(&c.name)).map(|c| c.name.clone()).collect())
}

/// SET: the offered contexts named exactly by `queries`, each once, in offer order.
pub fn select(offered: &[MetaContext], queries: &[String]) -> Result<Vec<MetaContext>, QueryError> {
    check_syntax(queries)?;
    let chosen: Vec<MetaContext> = offered.iter().filter(|c| queries.contains(&c.name)).cloned().collect();
    if chosen.len() > proto::MAX_CONTEXTS {
        return Err(QueryError::TooBig);
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(names: &[&str]) -> Vec<MetaContext> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let kind = match n.strip_prefix(proto::DIRTY_BITMAP_PREFIX) {
                    Some(leaf) => ContextKind::DirtyBitmap(leaf.to_owned()),
                    None => ContextKind::Allocation,
                };
                MetaContext { id: i as u32 + 1, name: (*n).to_owned(), kind }
            })
            .collect()
    }

    fn q(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    const ALL: [&str; 3] = ["base:allocation", "qemu:dirty-bitmap:1000-1001.src", "qemu:dirty-bitmap:1000-1001.tgt"];

    #[test]
    fn list_rules() {
        let o = ctx(&ALL);
        assert_eq!(list(&o, &[]).unwrap(), ALL.to_vec());
        assert_eq!(list(&o, &q(&["base:"])).unwrap(), vec!["base:allocation"]);
        assert_eq!(list(&o, &q(&["qemu:"])).unwrap(), ALL[1..].to_vec());
        assert_eq!(list(&o, &q(&["qemu:dirty-bitmap:"])).unwrap(), ALL[1..].to_vec());
        assert_eq!(list(&o, &q(&["qemu:dirty-bitmap:1000-1001.tgt"])).unwrap(), vec![ALL[2]]);
        // Unknown namespace and unknown leaf: nothing, no error.
        assert!(list(&o, &q(&["x-foo:bar", "base:nothing", "qemu:dirty-bitmap:9"])).unwrap().is_empty());
        assert!(matches!(list(&o, &q(&["allocation"])), Err(QueryError::Invalid(_))));
    }

    #[test]
    fn select_rules() {
        let o = ctx(&ALL);
        assert!(select(&o, &[]).unwrap().is_empty());
        // Wildcards select nothing in SET.
        assert!(select(&o, &q(&["base:", "qemu:"])).unwrap().is_empty());
        let s = select(&o, &q(&["qemu:dirty-bitmap:1000-1001.tgt", "base:allocation", "base:allocation"])).unwrap();
        assert_eq!(s.iter().map(|c| c.id).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(s[1].kind, ContextKind::DirtyBitmap("1000-1001.tgt".into()));
        assert!(matches!(select(&o, &q(&["base:allocation", "nocolon"])), Err(QueryError::Invalid(_))));
    }

    #[test]
    fn too_many_selected_is_too_big() {
        let names: Vec<String> =
            (0..=proto::MAX_CONTEXTS).map(|i| format!("{}{i:04X}-1001.src", proto::DIRTY_BITMAP_PREFIX)).collect();
        let o = ctx(&names.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(select(&o, &names), Err(QueryError::TooBig));
        assert_eq!(select(&o, &names[..proto::MAX_CONTEXTS]).unwrap().len(), proto::MAX_CONTEXTS);
        // LIST has no such limit: it only names what exists.
        assert_eq!(list(&o, &q(&["qemu:dirty-bitmap:"])).unwrap().len(), proto::MAX_CONTEXTS + 1);
    }

    #[test]
    fn offered_names_and_ids() {
        let e = crate::nbd::tests::MemExport::new(4096, false);
        let o = offered(&e);
        assert_eq!(
            o.iter().map(|c| (c.id, c.name.as_str())).collect::<Vec<_>>(),
            vec![(1, "base:allocation"), (2, "qemu:dirty-bitmap:mem.dirty")]
        );
        assert_eq!(o[1].kind, ContextKind::DirtyBitmap("mem.dirty".into()));
    }
}
