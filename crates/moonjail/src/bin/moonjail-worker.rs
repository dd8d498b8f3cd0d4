//! The worker process of moonjail's isolated mode. Its supervisor (a `Sandbox` built with
//! `Isolation::Process`) starts it; it is not meant to be run by hand.

fn main() {
    moonjail::worker::run_if_worker();
    eprintln!(
        "moonjail-worker: this program serves moonjail's isolated mode and is started by \
         its supervisor (with the argument {}); it does nothing on its own",
        moonjail::worker::WORKER_ARG
    );
    std::process::exit(2);
}
