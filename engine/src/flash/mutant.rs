//! Known-bad variants of the FlashCopy data path, for the model test to catch (so the model
//! provably can fail). Compiled to nothing outside tests: `is` is a constant `false`.

/// A deliberate bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutant {
    /// Partial writes to a target track skip the fill from the source.
    NoPartialMerge,
    /// Writes to a target are not recorded.
    NoTargetRecording,
    /// Resync clears the change recording before the new target bitmap is persisted.
    ClearBeforePersist,
    /// Copy-on-write happens after the source write.
    CowAfterWrite,
    /// The copier copies tracks without checking they are still uncopied.
    CopierOverwrites,
    /// The copier copies whole tracks over grains a sub-track copy-on-write preserved.
    CopierIgnoresGrains,
    /// Target reads take preserved grains from the source.
    ReadIgnoresGrains,
}

#[cfg(test)]
thread_local! {
    static ACTIVE: std::cell::Cell<Option<Mutant>> = const { std::cell::Cell::new(None) };
}

/// Is `m` the active mutant (this thread)?
#[cfg(test)]
pub fn is(m: Mutant) -> bool {
    ACTIVE.with(|a| a.get() == Some(m))
}

#[cfg(not(test))]
#[inline(always)]
pub fn is(_: Mutant) -> bool {
    false
}

/// Run `f` with `m` active on this thread.
#[cfg(test)]
pub fn with<T>(m: Option<Mutant>, f: impl FnOnce() -> T) -> T {
    ACTIVE.with(|a| a.set(m));
    let out = f();
    ACTIVE.with(|a| a.set(None));
    out
}
