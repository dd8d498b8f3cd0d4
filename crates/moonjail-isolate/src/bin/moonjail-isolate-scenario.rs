//! Test helper: locks itself down with `moonjail_isolate::lockdown`, then does one thing
//! (a forbidden system call, a normal workload, or waiting to be inspected) and reports on
//! stdout, one `KEY value` line per fact. The integration tests in `tests/` run it as a
//! child process, so that no test ever confines the test harness itself.
//!
//! ```text
//! moonjail-isolate-scenario SCENARIO [--without L1,L2] [--allow-missing L1,L2]
//!                                    [--as-nobody] [--pid-existing] [--keep FD]
//!                                    [--thread-before]
//! ```
//!
//! Exit status: what the scenario ends with; 2 for misuse; 3 when `lockdown` fails (the
//! error chain is printed as `LOCKDOWN-ERROR ...`).

#[cfg(target_os = "linux")]
fn main() {
    std::process::exit(linux::main());
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("moonjail-isolate-scenario only runs on Linux");
    std::process::exit(2);
}

#[cfg(target_os = "linux")]
mod linux {
    use std::collections::HashMap;
    use std::ffi::CString;
    use std::io::{self, BufRead, Write};
    use std::os::fd::{AsRawFd, RawFd};
    use std::os::unix::net::UnixStream;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant, SystemTime};

    use moonjail_isolate::{lockdown, Layer, LayerSet, LockdownConfig, PidNamespace};

    struct Args {
        scenario: String,
        without: LayerSet,
        allow_missing: LayerSet,
        as_nobody: bool,
        pid_existing: bool,
        keep: Vec<RawFd>,
        thread_before: bool,
    }

    fn parse() -> Result<Args, String> {
        let mut argv = std::env::args().skip(1);
        let scenario = argv.next().ok_or("missing scenario")?;
        let mut args = Args {
            scenario,
            without: LayerSet::empty(),
            allow_missing: LayerSet::empty(),
            as_nobody: false,
            pid_existing: false,
            keep: Vec::new(),
            thread_before: false,
        };
        let layers = |list: Option<String>| -> Result<LayerSet, String> {
            let list = list.ok_or("missing layer list")?;
            list.split(',')
                .filter(|name| !name.is_empty())
                .map(|name| {
                    if name == "all" {
                        Ok(LayerSet::all())
                    } else {
                        Layer::from_name(name)
                            .map(|layer| LayerSet::empty().with(layer))
                            .ok_or(format!("unknown layer {name}"))
                    }
                })
                .try_fold(LayerSet::empty(), |acc, set| {
                    set.map(|set| set.iter().fold(acc, LayerSet::with))
                })
        };
        while let Some(flag) = argv.next() {
            match flag.as_str() {
                "--without" => args.without = layers(argv.next())?,
                "--allow-missing" => args.allow_missing = layers(argv.next())?,
                "--as-nobody" => args.as_nobody = true,
                "--pid-existing" => args.pid_existing = true,
                "--thread-before" => args.thread_before = true,
                "--keep" => args.keep.push(
                    argv.next()
                        .and_then(|fd| fd.parse().ok())
                        .ok_or("--keep needs a descriptor number")?,
                ),
                other => return Err(format!("unknown flag {other}")),
            }
        }
        Ok(args)
    }

    fn say(line: &str) {
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }

    fn errno() -> i32 {
        io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    pub(crate) fn main() -> i32 {
        let args = match parse() {
            Ok(args) => args,
            Err(message) => {
                eprintln!("usage error: {message}");
                return 2;
            }
        };

        // Things to set up while the process is still free.
        if args.as_nobody {
            // SAFETY: plain id-changing calls on this single-threaded process.
            let rc = unsafe {
                libc::setgroups(0, std::ptr::null())
                    | libc::setresgid(65534, 65534, 65534)
                    | libc::setresuid(65534, 65534, 65534)
            };
            if rc != 0 {
                eprintln!("could not become nobody: {}", io::Error::last_os_error());
                return 2;
            }
        }
        let mut socket_pair = None;
        let mut keep = vec![0, 1, 2];
        keep.extend(&args.keep);
        if args.scenario == "workload" {
            match UnixStream::pair() {
                Ok((a, b)) => {
                    keep.push(a.as_raw_fd());
                    keep.push(b.as_raw_fd());
                    socket_pair = Some((a, b));
                }
                Err(error) => {
                    eprintln!("socketpair: {error}");
                    return 2;
                }
            }
        }
        let ia32_before = if args.scenario == "ia32" {
            Some(ia32_getpid())
        } else {
            None
        };
        let _early_thread = args
            .thread_before
            .then(|| std::thread::spawn(|| std::thread::sleep(Duration::from_secs(3600))));

        if args.scenario == "tsync" {
            return tsync();
        }

        let config = LockdownConfig::builder()
            .keep_fds(keep)
            .layers(
                LayerSet::all()
                    .iter()
                    .filter(|layer| !args.without.contains(*layer))
                    .collect(),
            )
            .allow_missing(args.allow_missing)
            .pid_namespace(if args.pid_existing {
                PidNamespace::Existing
            } else {
                PidNamespace::Fork
            })
            .build();
        let config = match config {
            Ok(config) => config,
            Err(error) => {
                eprintln!("bad configuration: {error}");
                return 2;
            }
        };
        match lockdown(&config) {
            Ok(report) => {
                for (layer, status) in report.layers() {
                    say(&format!("REPORT {layer} {status}"));
                }
            }
            Err(error) => {
                let mut text = error.to_string();
                let mut source = std::error::Error::source(&error);
                while let Some(cause) = source {
                    text.push_str(": ");
                    text.push_str(&cause.to_string());
                    source = cause.source();
                }
                say(&format!("LOCKDOWN-ERROR {text}"));
                return 3;
            }
        }
        say("LOCKED");
        run(&args.scenario, socket_pair, ia32_before)
    }

    /// Announces a forbidden call, makes it, and reports if it returned at all.
    fn attempt(name: &str, call: impl FnOnce() -> i64) -> i32 {
        say(&format!("ATTEMPT {name}"));
        let rc = call();
        say(&format!("SURVIVED {name} rc={rc} errno={}", errno()));
        0
    }

    fn run(
        scenario: &str,
        socket_pair: Option<(UnixStream, UnixStream)>,
        ia32_before: Option<i64>,
    ) -> i32 {
        let path = CString::new("/etc/passwd").unwrap_or_default();
        let true_bin = CString::new("/bin/true").unwrap_or_default();
        // SAFETY (for every block below): each call is made with valid pointers or null
        // where the kernel accepts null; the point is to see the seccomp filter stop it.
        match scenario {
            "report" => 0,
            "exit-code" => 7,
            "segv" => {
                say("ATTEMPT segv");
                // SAFETY: deliberately faults; the kernel forces SIGSEGV.
                unsafe { std::ptr::write_volatile(std::ptr::null_mut::<u8>(), 1) };
                0
            }
            "hold" => hold(),
            "workload" => workload(socket_pair),
            "execve" => attempt("execve", || {
                let argv = [true_bin.as_ptr(), std::ptr::null()];
                let envp = [std::ptr::null()];
                // SAFETY: see above.
                i64::from(unsafe { libc::execve(true_bin.as_ptr(), argv.as_ptr(), envp.as_ptr()) })
            }),
            "execveat" => attempt("execveat", || {
                let argv = [true_bin.as_ptr(), std::ptr::null()];
                let envp = [std::ptr::null::<libc::c_char>()];
                // SAFETY: see above.
                unsafe {
                    libc::syscall(
                        libc::SYS_execveat,
                        libc::AT_FDCWD,
                        true_bin.as_ptr(),
                        argv.as_ptr(),
                        envp.as_ptr(),
                        0,
                    )
                }
            }),
            // SAFETY: see above.
            "fork" => attempt("fork", || i64::from(unsafe { libc::fork() })),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: see above.
            "raw-fork" => attempt("raw-fork", || unsafe { libc::syscall(libc::SYS_fork) }),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: see above.
            "vfork" => attempt("vfork", || unsafe { libc::syscall(libc::SYS_vfork) }),
            "clone-process" => attempt("clone-process", || {
                // SAFETY: see above; a null stack with plain SIGCHLD would behave like fork.
                unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0) }
            }),
            "clone-thread-newnet" => attempt("clone-thread-newnet", || {
                let flags =
                    libc::CLONE_THREAD | libc::CLONE_SIGHAND | libc::CLONE_VM | libc::CLONE_NEWNET;
                // SAFETY: see above; stopped before the kernel ever sees it.
                unsafe { libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0) }
            }),
            "clone3" => {
                // size 0 is invalid: should the call ever reach the kernel it fails
                // with EINVAL instead of creating anything.
                // SAFETY: see above.
                let rc = unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0) };
                say(&format!("CLONE3 rc={rc} errno={}", errno()));
                0
            }
            "getcpu" => {
                let (mut cpu, mut node) = (0u32, 0u32);
                // SAFETY: see above; two valid out-parameters, no cache argument.
                let rc = unsafe {
                    libc::syscall(
                        libc::SYS_getcpu,
                        &mut cpu as *mut u32,
                        &mut node as *mut u32,
                        std::ptr::null_mut::<u8>(),
                    )
                };
                say(&format!("GETCPU rc={rc} errno={}", errno()));
                0
            }
            "vma-name" => {
                // What mimalloc does after each mmap: name the mapping.
                let len = 1 << 16;
                // SAFETY: see above; a fresh private anonymous mapping, named, then unmapped.
                let rc = unsafe {
                    let p = libc::mmap(
                        std::ptr::null_mut(),
                        len,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    );
                    let rc = libc::prctl(0x53564d41, 0, p as libc::c_ulong, len, c"test".as_ptr());
                    libc::munmap(p, len);
                    rc
                };
                say(&format!("VMA-NAME rc={rc} errno={}", errno()));
                0
            }
            // prctl options other than PR_SET_NAME / PR_GET_NAME / PR_SET_VMA: the errno
            // program lets them through to the allowlist, which must still kill them.
            // SAFETY: see above; stopped before the kernel ever sees it.
            "prctl-set-dumpable" => attempt("prctl-set-dumpable", || unsafe {
                libc::syscall(libc::SYS_prctl, libc::PR_SET_DUMPABLE, 1, 0, 0, 0)
            }),
            // SAFETY: see above; stopped before the kernel ever sees it.
            "prctl-set-mm" => attempt("prctl-set-mm", || unsafe {
                libc::syscall(
                    libc::SYS_prctl,
                    libc::PR_SET_MM,
                    libc::PR_SET_MM_START_BRK,
                    0,
                    0,
                    0,
                )
            }),
            "vma-name-high-bits" => {
                // The kernel reads prctl's option as an int: a 64-bit register with junk
                // above PR_SET_VMA is PR_SET_VMA to it, and must get ENOSYS as well
                // (both programs compare the low 32 bits).
                // SAFETY: see above; no mapping is named (null address, length 0).
                let rc = unsafe {
                    libc::syscall(libc::SYS_prctl, 0xdead_beef_5356_4d41_u64, 0, 0, 0, 0)
                };
                say(&format!("VMA-NAME-HIGH rc={rc} errno={}", errno()));
                0
            }
            "fstatat" => {
                let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
                // SAFETY: see above; `stat` is a valid buffer.
                let rc = unsafe {
                    libc::syscall(
                        libc::SYS_newfstatat,
                        libc::AT_FDCWD,
                        path.as_ptr(),
                        stat.as_mut_ptr(),
                        0,
                    )
                };
                say(&format!("FSTATAT rc={rc} errno={}", errno()));
                0
            }
            "socket" => attempt("socket", || {
                // SAFETY: see above.
                i64::from(unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) })
            }),
            "socket-unix" => attempt("socket-unix", || {
                // SAFETY: see above.
                i64::from(unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) })
            }),
            "connect" => attempt("connect", || {
                // SAFETY: see above.
                i64::from(unsafe { libc::connect(0, std::ptr::null(), 0) })
            }),
            "bind" => attempt("bind", || {
                // SAFETY: see above.
                i64::from(unsafe { libc::bind(0, std::ptr::null(), 0) })
            }),
            "listen" => attempt("listen", || {
                // SAFETY: see above.
                i64::from(unsafe { libc::listen(0, 1) })
            }),
            "accept" => attempt("accept", || {
                // SAFETY: see above.
                unsafe { libc::syscall(libc::SYS_accept, 0, 0, 0) }
            }),
            "accept4" => attempt("accept4", || {
                // SAFETY: see above.
                i64::from(unsafe {
                    libc::accept4(0, std::ptr::null_mut(), std::ptr::null_mut(), 0)
                })
            }),
            "openat" => attempt("openat", || {
                // SAFETY: see above.
                i64::from(unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) })
            }),
            #[cfg(target_arch = "x86_64")]
            "open" => attempt("open", || {
                // SAFETY: see above.
                unsafe { libc::syscall(libc::SYS_open, path.as_ptr(), libc::O_RDONLY) }
            }),
            "openat2" => attempt("openat2", || {
                let how = [0u64; 3];
                // SAFETY: see above; `how` is a valid open_how.
                unsafe {
                    libc::syscall(
                        libc::SYS_openat2,
                        libc::AT_FDCWD,
                        path.as_ptr(),
                        how.as_ptr(),
                        std::mem::size_of_val(&how),
                    )
                }
            }),
            "ptrace" => attempt("ptrace", || {
                // SAFETY: see above.
                unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) }
            }),
            "kill" => attempt("kill", || {
                // SAFETY: see above; signal 0 only checks.
                i64::from(unsafe { libc::kill(1, 0) })
            }),
            "tgkill-other" => attempt("tgkill-other", || {
                // SAFETY: see above; signal 0 only checks.
                unsafe { libc::syscall(libc::SYS_tgkill, 2, 2, 0) }
            }),
            "mprotect-exec" => attempt("mprotect-exec", || {
                // SAFETY: see above; an anonymous private mapping owned by nobody else.
                unsafe {
                    let page = libc::mmap(
                        std::ptr::null_mut(),
                        4096,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    );
                    say(&format!("MMAP-RW ok={}", page != libc::MAP_FAILED));
                    i64::from(libc::mprotect(
                        page,
                        4096,
                        libc::PROT_READ | libc::PROT_EXEC,
                    ))
                }
            }),
            "mmap-exec" => attempt("mmap-exec", || {
                // SAFETY: see above.
                let page = unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        4096,
                        libc::PROT_READ | libc::PROT_EXEC,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    )
                };
                page as i64
            }),
            "mount" => attempt("mount", || {
                let tmpfs = CString::new("tmpfs").unwrap_or_default();
                let target = CString::new("/tmp").unwrap_or_default();
                // SAFETY: see above.
                i64::from(unsafe {
                    libc::mount(
                        tmpfs.as_ptr(),
                        target.as_ptr(),
                        tmpfs.as_ptr(),
                        0,
                        std::ptr::null(),
                    )
                })
            }),
            "unshare" => attempt("unshare", || {
                // SAFETY: see above.
                i64::from(unsafe { libc::unshare(libc::CLONE_NEWNET) })
            }),
            #[cfg(target_arch = "x86_64")]
            "x32" => attempt("x32", || {
                const X32_SYSCALL_BIT: i64 = 0x4000_0000;
                // SAFETY: see above.
                unsafe { libc::syscall(X32_SYSCALL_BIT | libc::SYS_getpid) }
            }),
            #[cfg(target_arch = "x86_64")]
            "ia32" => {
                say(&format!("IA32-BEFORE {}", ia32_before.unwrap_or(-1)));
                attempt("ia32", ia32_getpid)
            }
            "landlock" => landlock_checks(),
            "network" => network_checks(),
            "ids" => {
                let (mut r, mut e, mut s) = (0, 0, 0);
                let (mut rg, mut eg, mut sg) = (0, 0, 0);
                // SAFETY: valid out-pointers.
                unsafe {
                    libc::getresuid(&mut r, &mut e, &mut s);
                    libc::getresgid(&mut rg, &mut eg, &mut sg);
                }
                // SAFETY: size 0 only returns the count.
                let groups = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
                say(&format!("UIDS {r} {e} {s}"));
                say(&format!("GIDS {rg} {eg} {sg}"));
                say(&format!("GROUPS {groups}"));
                0
            }
            "unshare-pid-then-thread" => {
                // Documents why PidNamespace::Fork exists: run with every layer disabled.
                // SAFETY: see above.
                let rc = unsafe { libc::unshare(libc::CLONE_NEWPID) };
                say(&format!("UNSHARE-PID rc={rc}"));
                match std::thread::Builder::new().spawn(|| ()) {
                    Ok(handle) => {
                        let _ = handle.join();
                        say("THREAD ok");
                    }
                    Err(error) => say(&format!(
                        "THREAD error errno={}",
                        error.raw_os_error().unwrap_or(0)
                    )),
                }
                0
            }
            other => {
                say(&format!("UNKNOWN-SCENARIO {other}"));
                2
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn ia32_getpid() -> i64 {
        let mut rax: i64 = 20; // getpid in the i386 table
                               // SAFETY: `int 0x80` enters the 32-bit system call path with eax = 20 (getpid), which
                               // takes no argument and touches no memory; it clobbers only rax (and r8-r11 are
                               // preserved by the kernel on this path).
        unsafe {
            std::arch::asm!("int 0x80", inout("rax") rax => rax, options(nostack));
        }
        rax
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn ia32_getpid() -> i64 {
        -1
    }

    /// Waits on stdin while a second thread exists, so the test can inspect /proc from outside.
    fn hold() -> i32 {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let helper = std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || {
                let _ = rx.recv();
            });
        let helper = match helper {
            Ok(helper) => helper,
            Err(error) => {
                say(&format!("THREAD-ERROR {error}"));
                return 1;
            }
        };
        say("READY");
        let mut line = String::new();
        let _ = io::stdin().lock().read_line(&mut line);
        let _ = tx.send(());
        let joined = helper.join().is_ok();
        say(&format!("DONE joined={joined}"));
        0
    }

    /// Without `lockdown`: starts a thread, then installs only the seccomp filter from the
    /// main thread, and waits; the test checks from outside that both threads are filtered.
    fn tsync() -> i32 {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let early = std::thread::spawn(move || {
            let _ = rx.recv();
        });
        let pid = std::process::id() as i32;
        let applied = moonjail_isolate::seccomp::Filter::worker(pid).and_then(|f| f.apply());
        if let Err(error) = applied {
            say(&format!("SECCOMP-ERROR {error}"));
            return 3;
        }
        say("READY");
        let mut line = String::new();
        let _ = io::stdin().lock().read_line(&mut line);
        let _ = tx.send(());
        say(&format!("DONE joined={}", early.join().is_ok()));
        0
    }

    static SIGNALLED: AtomicBool = AtomicBool::new(false);

    extern "C" fn on_signal(_: libc::c_int) {
        SIGNALLED.store(true, Ordering::SeqCst);
    }

    /// What a Lua worker does all day: allocate and free, start and join a thread, read
    /// clocks, get random numbers, signal itself, sleep, and talk over its channels.
    fn workload(socket_pair: Option<(UnixStream, UnixStream)>) -> i32 {
        let started = Instant::now();
        // Memory: one big block, many small ones, growth by realloc, all freed.
        let mut big = vec![0u8; 64 << 20];
        for (i, byte) in big.iter_mut().enumerate().step_by(4096) {
            *byte = i as u8;
        }
        let mut checksum: u64 = big.iter().step_by(4096).map(|b| u64::from(*b)).sum();
        drop(big);
        let small: Vec<Box<[u8; 48]>> = (0..200_000).map(|i| Box::new([i as u8; 48])).collect();
        checksum += small.iter().map(|b| u64::from(b[0])).sum::<u64>();
        drop(small);
        let mut grown = Vec::new();
        for i in 0..5_000_000u32 {
            grown.push(i);
        }
        checksum += u64::from(grown[4_999_999]);
        drop(grown);
        say(&format!("MEMORY ok checksum={checksum}"));

        // Threads: a named watchdog thread, joined.
        let worker = std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(|| (1..=1000u64).sum::<u64>());
        match worker.map(|handle| handle.join()) {
            Ok(Ok(sum)) => say(&format!("THREAD ok sum={sum}")),
            Ok(Err(_)) => say("THREAD panicked"),
            Err(error) => say(&format!("THREAD error {error}")),
        }
        // Several threads at once, synchronised through a mutex.
        let counter = std::sync::Arc::new(std::sync::Mutex::new(0u32));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let counter = counter.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        if let Ok(mut c) = counter.lock() {
                            *c += 1;
                        }
                    }
                })
            })
            .collect();
        let all_joined = handles.into_iter().all(|h| h.join().is_ok());
        let total = counter.lock().map(|c| *c).unwrap_or(0);
        say(&format!("THREADS joined={all_joined} total={total}"));

        // Clocks and randomness.
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut cpu = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid out-pointer.
        let cpu_rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut cpu) };
        let mut map = HashMap::new();
        map.insert("random-state", 1);
        let mut random = [0u8; 16];
        // SAFETY: valid buffer of the given length.
        let got = unsafe { libc::getrandom(random.as_mut_ptr().cast(), random.len(), 0) };
        say(&format!(
            "CLOCK ok unix={} cpu_rc={cpu_rc} random={got} map={}",
            now > 1_600_000_000,
            map.len()
        ));

        // The in-process timeout signal: a handler, then tgkill to ourselves.
        // SAFETY: installs a handler that only stores to an atomic, then signals this thread.
        let raised = unsafe {
            libc::signal(libc::SIGUSR1, on_signal as *const () as libc::sighandler_t);
            libc::pthread_kill(libc::pthread_self(), libc::SIGUSR1)
        };
        say(&format!(
            "SIGNAL rc={raised} handled={}",
            SIGNALLED.load(Ordering::SeqCst)
        ));

        std::thread::sleep(Duration::from_millis(10));

        // The channel: sendmsg/recvmsg over a socket pair opened before lockdown.
        if let Some((a, b)) = socket_pair {
            let sent = send_msg(a.as_raw_fd(), b"ping");
            let mut buffer = [0u8; 16];
            let received = recv_msg(b.as_raw_fd(), &mut buffer);
            say(&format!(
                "CHANNEL sent={sent} received={received} payload={}",
                String::from_utf8_lossy(&buffer[..received.max(0) as usize])
            ));
        }
        // And stdin/stdout: read one line, echo it.
        let mut line = String::new();
        let _ = io::stdin().lock().read_line(&mut line);
        say(&format!("ECHO {}", line.trim()));
        say(&format!(
            "WORKLOAD ok elapsed_ms={}",
            started.elapsed().as_millis()
        ));
        0
    }

    fn send_msg(fd: RawFd, payload: &[u8]) -> isize {
        let mut iov = libc::iovec {
            iov_base: payload.as_ptr() as *mut libc::c_void,
            iov_len: payload.len(),
        };
        // SAFETY: a zeroed msghdr is valid; it then points at one live iovec.
        unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            libc::sendmsg(fd, &msg, 0)
        }
    }

    fn recv_msg(fd: RawFd, buffer: &mut [u8]) -> isize {
        let mut iov = libc::iovec {
            iov_base: buffer.as_mut_ptr().cast(),
            iov_len: buffer.len(),
        };
        // SAFETY: a zeroed msghdr is valid; it then points at one live iovec.
        unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            libc::recvmsg(fd, &mut msg, 0)
        }
    }

    /// Run without seccomp: each file system access must be refused by Landlock (EACCES).
    fn landlock_checks() -> i32 {
        let result = |r: io::Result<()>| match r {
            Ok(()) => "ok".to_owned(),
            Err(e) => format!("errno={}", e.raw_os_error().unwrap_or(0)),
        };
        say(&format!(
            "READ-FILE {}",
            result(std::fs::read("/etc/passwd").map(|_| ()))
        ));
        say(&format!(
            "READ-DIR {}",
            result(std::fs::read_dir("/").map(|_| ()))
        ));
        let created = format!("/tmp/moonjail-landlock-{}", std::process::id());
        let create = std::fs::File::create(&created).map(|_| ());
        if create.is_ok() {
            let _ = std::fs::remove_file(&created);
        }
        say(&format!("CREATE-FILE {}", result(create)));
        let exec = std::process::Command::new("/bin/true").status().map(|_| ());
        say(&format!("EXEC {}", result(exec)));
        0
    }

    /// Run without seccomp and Landlock: the network namespace must hold only a loopback
    /// interface that is down.
    fn network_checks() -> i32 {
        match std::fs::read_to_string("/proc/self/net/dev") {
            Ok(dev) => {
                let names: Vec<&str> = dev
                    .lines()
                    .skip(2)
                    .filter_map(|line| line.split(':').next())
                    .map(str::trim)
                    .collect();
                say(&format!("INTERFACES {}", names.join(",")));
            }
            Err(error) => say(&format!("INTERFACES error {error}")),
        }
        // SAFETY: a UDP socket used only for the ioctl and connect below, then closed.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
            if fd < 0 {
                say(&format!("SOCKET errno={}", errno()));
                return 1;
            }
            let mut request: libc::ifreq = std::mem::zeroed();
            for (dst, src) in request.ifr_name.iter_mut().zip(b"lo\0") {
                *dst = *src as libc::c_char;
            }
            if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut request) == 0 {
                let flags = i32::from(request.ifr_ifru.ifru_flags);
                say(&format!("LO-UP {}", flags & libc::IFF_UP != 0));
            } else {
                say(&format!("LO-UP errno={}", errno()));
            }
            let address = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 9u16.to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_be_bytes([127, 0, 0, 1]).to_be(),
                },
                sin_zero: [0; 8],
            };
            let rc = libc::connect(
                fd,
                (&address as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            );
            if rc == 0 {
                say("CONNECT-LOOPBACK ok");
            } else {
                say(&format!("CONNECT-LOOPBACK errno={}", errno()));
            }
            libc::close(fd);
        }
        0
    }
}
