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
