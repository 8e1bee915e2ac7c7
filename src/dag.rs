//! The stage DAG (petgraph): topological order, cycles printed as paths, `--until` selections.

use std::collections::{BTreeSet, HashMap};

use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use petgraph::Direction;

use crate::pipeline::{InputDecl, Pipeline, PipelineError};

/// Stages as nodes, `upstream → downstream` edges from artifact references.
pub struct Dag {
    graph: DiGraph<String, ()>,
    index: HashMap<String, NodeIndex>,
    order: Vec<String>,
}

impl Dag {
    /// Builds the DAG; a cycle is an error that prints it as `a -> b -> a`.
    pub fn build(p: &Pipeline) -> Result<Self, PipelineError> {
        let mut graph = DiGraph::new();
        let mut index = HashMap::new();
        for s in &p.stages {
            index.insert(s.name.clone(), graph.add_node(s.name.clone()));
        }
        for s in &p.stages {
            for input in &s.inputs {
                if let InputDecl::Artifact { stage, .. } = input {
                    graph.update_edge(index[stage], index[&s.name], ());
                }
            }
        }
        let order = match toposort(&graph, None) {
            Ok(order) => order.into_iter().map(|n| graph[n].clone()).collect(),
            Err(_) => {
                let cycle = find_cycle(&graph);
                let first = cycle.first().cloned().unwrap_or_default();
                let stage = p.stage(&first).expect("cycle nodes are stages");
                return Err(PipelineError {
                    origin: stage.header.clone(),
                    key: format!("stage.{first}"),
                    message: format!("the stages form a cycle: {}", cycle.join(" -> ")),
                });
            }
        };
        Ok(Dag {
            graph,
            index,
            order,
        })
    }

    /// All stages, upstream before downstream (ties in file order).
    pub fn order(&self) -> &[String] {
        &self.order
    }

    /// Direct upstream stages of `name`.
    pub fn parents(&self, name: &str) -> Vec<String> {
        self.graph
            .edges_directed(self.index[name], Direction::Incoming)
            .map(|e| self.graph[e.source()].clone())
            .collect()
    }

    /// `name` and everything it depends on.
    pub fn with_ancestors(&self, name: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![name.to_string()];
        while let Some(n) = todo.pop() {
            if seen.insert(n.clone()) {
                todo.extend(self.parents(&n));
            }
        }
        seen
    }
}

/// A cycle as a closed path of stage names (first == last).
fn find_cycle(graph: &DiGraph<String, ()>) -> Vec<String> {
    for scc in tarjan_scc(graph) {
        let self_loop = scc.len() == 1 && graph.contains_edge(scc[0], scc[0]);
        if scc.len() < 2 && !self_loop {
            continue;
        }
        let members: BTreeSet<NodeIndex> = scc.iter().copied().collect();
        let start = *members.iter().next().expect("non-empty scc");
        // Walk inside the component until a node repeats.
        let mut path = vec![start];
        let mut node = start;
        loop {
            let next = graph
                .neighbors_directed(node, Direction::Outgoing)
                .filter(|n| members.contains(n))
                .min()
                .expect("every scc member has a successor inside it");
            if let Some(pos) = path.iter().position(|n| *n == next) {
                let mut cycle: Vec<String> =
                    path[pos..].iter().map(|n| graph[*n].clone()).collect();
                cycle.push(graph[next].clone());
                return cycle;
            }
            path.push(next);
            node = next;
        }
    }
    Vec::new()
}
