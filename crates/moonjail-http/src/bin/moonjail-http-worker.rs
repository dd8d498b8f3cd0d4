//! The worker process of moonjail's isolated mode, built with the HTTP service so that
//! its tests (and a deployment without the `moonjail` CLI) have one. The `moonjail`
//! binary serves as its own worker; `moonjail-worker` is the same program as this.

fn main() {
    moonjail::worker::run_if_worker();
    eprintln!(
        "moonjail-http-worker: this program serves moonjail's isolated mode and is started \
         by its supervisor (with the argument {}); it does nothing on its own",
        moonjail::worker::WORKER_ARG
    );
    std::process::exit(2);
}
