//! `splade store repair`: rebuild the artifact store from what is on disk.

use std::path::Path;

use anyhow::Result;
use splade::store::Store;

/// Subcommands of `splade store`.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Move the store aside and rebuild it from the artifacts' manifests, resume and run files.
    Repair,
}

/// Runs the subcommand.
pub fn exec(root: &Path, command: Command) -> Result<()> {
    match command {
        Command::Repair => {
            let (rebuilt, aside) = Store::repair(root)?;
            if let Some(aside) = aside {
                println!("moved the old store to {}", aside.display());
            }
            println!(
                "rebuilt the artifact store in {}: {rebuilt}",
                root.display()
            );
            Ok(())
        }
    }
}
