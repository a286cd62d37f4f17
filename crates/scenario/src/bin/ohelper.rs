//! `memhp-scenario-ohelper ARGS...`: the guest helper as a program of its
//! own (the same code as the `memhp ohelper` subcommand).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(memhp_scenario::ohelper_main(&args));
}
