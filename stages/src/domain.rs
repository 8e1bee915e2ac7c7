//! The rows artifacts hold, as the stages use them in memory (their Parquet layout is in
//! [`crate::schema`], their readers and writers in [`crate::parquet_io`]).

/// An `id, text` table (documents or queries).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct IdText {
    /// Row ids, in file order.
    pub ids: Vec<String>,
    /// The text of each id.
    pub texts: Vec<String>,
}

/// An `id, text` table held in two contiguous buffers (one allocation each for all ids and all
/// texts, plus an offset per row), for the millions of passages a training run may draw from:
/// 16 bytes per row of overhead instead of two `String`s' 48 plus two allocations.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PackedIdText {
    ids: String,
    texts: String,
    /// Row `i` spans `id_ends[i-1]..id_ends[i]` of `ids` (0 for the first row); same for texts.
    id_ends: Vec<u64>,
    text_ends: Vec<u64>,
}

impl PackedIdText {
    /// Appends a row.
    pub fn push(&mut self, id: &str, text: &str) {
        self.ids.push_str(id);
        self.texts.push_str(text);
        self.id_ends.push(self.ids.len() as u64);
        self.text_ends.push(self.texts.len() as u64);
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.id_ends.len()
    }

    /// True when no row is held.
    pub fn is_empty(&self) -> bool {
        self.id_ends.is_empty()
    }

    /// The id of row `i` (panics when `i >= len()`, like slice indexing).
    pub fn id(&self, i: usize) -> &str {
        &self.ids[packed_span(&self.id_ends, i)]
    }

    /// The text of row `i` (panics when `i >= len()`, like slice indexing).
    pub fn text(&self, i: usize) -> &str {
        &self.texts[packed_span(&self.text_ends, i)]
    }

    /// Gives back the capacity grown past what the rows use.
    pub fn shrink_to_fit(&mut self) {
        self.ids.shrink_to_fit();
        self.texts.shrink_to_fit();
        self.id_ends.shrink_to_fit();
        self.text_ends.shrink_to_fit();
    }
}

/// Where row `i` of a packed buffer lies, given each row's end offset: `ends[i-1]..ends[i]`
/// (from 0 for the first row). Panics when `i >= ends.len()`, like slice indexing.
pub(crate) fn packed_span(ends: &[u64], i: usize) -> std::ops::Range<usize> {
    let start = if i == 0 { 0 } else { ends[i - 1] as usize };
    start..ends[i] as usize
}

/// One relevance judgment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qrel {
    /// Query id.
    pub qid: String,
    /// Document id.
    pub did: String,
    /// Graded relevance (0 = judged non-relevant).
    pub rel: i32,
}

/// One ranked result.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    /// Query id.
    pub qid: String,
    /// Document id.
    pub did: String,
    /// 1-based rank.
    pub rank: u32,
    /// Retrieval score, at the precision it came with (an ingested run keeps its digits;
    /// `evaluate` compares scores as trec_eval does, rounded to f32).
    pub score: f64,
}

/// A sparse vector: term ids ascending, with their (positive) weights.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SparseVector {
    /// Vocabulary ids, ascending.
    pub terms: Vec<u32>,
    /// The weight of each term.
    pub weights: Vec<f32>,
}

impl SparseVector {
    /// Number of non-zero terms.
    pub fn nnz(&self) -> usize {
        self.terms.len()
    }

    /// Dot product with another vector (both sorted by term).
    pub fn dot(&self, other: &SparseVector) -> f32 {
        let (mut i, mut j, mut s) = (0, 0, 0.0f32);
        while i < self.terms.len() && j < other.terms.len() {
            match self.terms[i].cmp(&other.terms[j]) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    s += self.weights[i] * other.weights[j];
                    i += 1;
                    j += 1;
                }
            }
        }
        s
    }
}

/// One query's mined training examples.
#[derive(Debug, Clone, PartialEq)]
pub struct NegativesRow {
    /// Query id.
    pub qid: String,
    /// Its positives.
    pub pos: Vec<String>,
    /// Its sampled negatives, best-ranked first.
    pub neg: Vec<String>,
    /// The rank of each negative in the list it was mined from.
    pub neg_rank: Vec<u32>,
    /// The run or system the negatives came from.
    pub source: String,
}

#[cfg(test)]
mod tests {
    use super::PackedIdText;

    #[test]
    fn packed_rows_read_back_as_pushed() {
        let rows = [("d1", "a passage"), ("", ""), ("ü-7", "über ☃"), ("d9", "")];
        let mut t = PackedIdText::default();
        rows.iter().for_each(|(id, text)| t.push(id, text));
        t.shrink_to_fit();
        assert_eq!(t.len(), rows.len());
        for (i, (id, text)) in rows.iter().enumerate() {
            assert_eq!((t.id(i), t.text(i)), (*id, *text), "row {i}");
        }
    }
}
