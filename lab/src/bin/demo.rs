//! causeway-demo: two sites in network namespaces joined by a Causeway
//! tunnel, measured and removed again. Needs root; scripts/demo.sh builds
//! it with causewayd and installs what it needs.

fn main() {
    if let Err(e) = causeway_lab::demo::run() {
        eprintln!("causeway-demo: {e:#}");
        std::process::exit(1);
    }
}
