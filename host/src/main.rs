//! `s3m`: the S3M host. Reads spin.toml, runs its WebAssembly components
//! behind Spin's HTTP routes, and gives them the facility's capabilities.

mod admin;
mod audit;
mod builder;
mod capabilities;
mod cli;
mod compose;
mod dependencies;
mod engine;
mod facility;
mod gateway;
mod logging;
mod manifest;
mod metrics;
mod openapi;
mod providers;
mod routes;
mod runtime_config;
mod server;
mod state;
mod sweeper;
mod text;
mod wiring;
mod workflows;

// glibc's malloc was a tenth of the host's CPU per request (perf, issue 13);
// mimalloc's thread-local free lists serve the same allocations for less.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
