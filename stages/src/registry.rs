//! The stage kinds this build knows.

use crate::contract::Stage;

/// All stage kinds, looked up by name.
pub struct Registry {
    kinds: Vec<Box<dyn Stage>>,
}

impl Registry {
    /// Every kind compiled into this build.
    pub fn builtin() -> Self {
        let mut kinds: Vec<Box<dyn Stage>> = vec![
            Box::new(crate::ingest::Ingest),
            Box::new(crate::bm25::Bm25),
            Box::new(crate::encode::Encode),
            Box::new(crate::index::Index),
            Box::new(crate::retrieve::Retrieve),
            Box::new(crate::evaluate::Evaluate),
            Box::new(crate::report::Report),
            Box::new(crate::export::Export),
            Box::new(crate::mine::Mine),
            Box::new(crate::distill::Distill),
            Box::new(crate::train::Train),
        ];
        kinds.extend(test_kinds());
        Registry { kinds }
    }

    /// The kind named `name`.
    pub fn get(&self, name: &str) -> Option<&dyn Stage> {
        self.kinds
            .iter()
            .find(|k| k.kind() == name)
            .map(|k| k.as_ref())
    }

    /// All kind names, for error messages and suggestions.
    pub fn names(&self) -> Vec<&'static str> {
        self.kinds.iter().map(|k| k.kind()).collect()
    }

    /// All kinds.
    pub fn all(&self) -> impl Iterator<Item = &dyn Stage> {
        self.kinds.iter().map(|k| k.as_ref())
    }
}

/// Kinds compiled in only for tests (`test-stages` feature).
#[cfg(feature = "test-stages")]
fn test_kinds() -> Vec<Box<dyn Stage>> {
    vec![Box::new(crate::slow_shards::SlowShards)]
}

/// Kinds compiled in only for tests (`test-stages` feature): none in this build.
#[cfg(not(feature = "test-stages"))]
fn test_kinds() -> Vec<Box<dyn Stage>> {
    Vec::new()
}
