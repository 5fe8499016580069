//! The daemon's `--help` text: every option with its default, the
//! environment, systemd, the signals and the exit statuses, as an operator
//! reads them at the terminal. The README's options table and the man page
//! say the same at length; `tests/daemon.rs` checks that it names every option.

/// The `--help` text.
pub const USAGE: &str = "\
echod: a TCP line echo daemon. Every complete line a client sends comes back
to it byte for byte; one thread serves thousands of clients, and --workers
runs one such thread per core.

Usage: echod [OPTIONS]
       echod probe [ADDR] [--timeout MS]

Options:
  -l, --listen ADDR            Listen on ADDR: IP:PORT or HOST:PORT, e.g.
                               0.0.0.0:12321, [::]:7 or localhost:7 (a host
                               name is resolved at start, and every address
                               it has is bound). Repeatable, each address
                               once; replaces the default addresses
                               [default: 127.0.0.1:12321, [::1]:12321]
  -p, --port PORT              Port for the default addresses; 0 lets the OS
                               choose [default: 12321]
      --framing MODE           crlf: lines end at CR LF; lf: at LF;
                               raw: no lines, every byte echoed [default: crlf]
      --max-line-bytes SIZE    Longest line, terminator included; a longer line
                               closes the connection [default: 64KiB]
      --max-pending-bytes SIZE Echoes owed to one client at which echod stops
                               reading from it until it catches up [default: 1MiB]
      --read-budget SIZE       Bytes read from one client in one turn of the
                               event loop before the others are served; larger
                               favours bulk senders, smaller everyone else's
                               latency [default: 64KiB]
      --max-connections N      Clients served at once; more are accepted and
                               closed [default: open-file limit - 32]
      --idle-timeout SECS      Close connections with no traffic for SECS;
                               0 disables [default: 0]
      --max-connections-per-ip N
                               Clients one address (an IPv6 /64) may have
                               open at once; more are accepted and closed;
                               0 disables [default: 0]
      --max-memory SIZE        Buffer memory all clients together may hold;
                               past it, reading waits and the clients that
                               hold the most without reading are closed;
                               0 disables [default: 256MiB]
      --send-timeout SECS      Close a connection owed echoes that takes none
                               of them for SECS; 0 disables [default: 60]
      --line-timeout SECS      Close a connection whose unfinished line began
                               SECS ago; 0 disables [default: 60]
      --tcp-keepalive SECS     TCP keepalive on client sockets: probe a peer
                               silent for SECS, every 10 s, 6 times, then
                               close; 0 disables [default: 60]
      --shutdown-timeout SECS  After SIGINT/SIGTERM/SIGQUIT, time allowed to
                               deliver owed echoes [default: 5]
      --workers N              Event loops, one thread each, sharing the
                               listening addresses (SO_REUSEPORT); the kernel
                               spreads connections among them, and
                               --max-connections is shared out exactly
                               [default: 1]
      --stats-interval SECS    Log a one-line summary (connections, rates,
                               closes by reason) every SECS; 0 disables
                               [default: 0]
      --metrics-listen ADDR    Serve Prometheus metrics at http://ADDR/metrics;
                               ADDR is IP:PORT. Repeatable, each address
                               once [default: none]
      --log-level LEVEL        off, error, warn, info, debug or trace
                               [default: $RUST_LOG, else info]
  -q, --quiet                  Log warnings and errors only (--log-level warn)
      --allow NET              Admit clients in NET (192.0.2.0/24, 2001:db8::/32,
                               or one address). Repeatable; with any --allow,
                               a client no rule names is refused [default: all]
      --deny NET               Refuse clients in NET, closed at accept unread.
                               Repeatable; --allow and --deny are tried in the
                               order given and the first that matches decides
                               [default: none]
      --proxy-protocol         Every connection must begin with a PROXY
                               protocol header, v1 or v2 (HAProxy's send-proxy
                               and send-proxy-v2); the client it names is the
                               client for the rules, limits and logs, and the
                               header is never echoed [default: off]
      --proxy-from NET         Believe PROXY headers only from NET; any other
                               source is closed at accept unread. Repeatable;
                               needs --proxy-protocol [default: 127.0.0.0/8, ::1]
  -h, --help                   Print this help and exit
  -V, --version                Print the version and exit

Probe: echod probe checks that an echo daemon answers at ADDR
[default: 127.0.0.1:12321] and exits 0 if the echo comes back, 1 if not;
'echod probe --help' tells more.

SIZE is a number of bytes, optionally with K, KiB, M or MiB (powers of 1024).
SECS may have a fraction (0.5). Logs go to standard output.

Environment: every option may be given as ECHOD_<OPTION>, its long name in
capitals with _ for - (ECHOD_LISTEN=[::]:7, ECHOD_MAX_LINE_BYTES=4KiB,
ECHOD_QUIET=1); a repeatable option takes values separated by commas. The
command line wins, option by option (--listen and --port count as one, as
do --allow and --deny, and --log-level and --quiet). A bad value exits 64
naming the variable; an ECHOD_ variable that is no option is warned about.

systemd: with socket activation (LISTEN_PID and LISTEN_FDS set), echod
serves the sockets it inherits and binds nothing; --listen and --port are
then refused. With NOTIFY_SOCKET set, it sends READY=1, STATUS= and
STOPPING=1 (Type=notify).

Signals: SIGINT, SIGTERM or SIGQUIT stops accepting, delivers owed echoes
and exits; a second one exits at once. SIGUSR1 logs a summary. SIGUSR2
upgrades in place: it re-executes the program file (checked first with
--version) with every listener and live connection, or logs why not and
serves on. SIGHUP and SIGALRM are logged and ignored.

Exit status: 0 after a shutdown in which every connection finished, 3 after
one that cut connections off (a second signal, or --shutdown-timeout), 64
for a bad command line, 71 if echod cannot start (a listening socket, the
event loop or logging cannot be set up, or another process answers on the
address), 70 if the event loop fails while running. echod probe: 0 if the
echo came back, 1 if not, 64 for a bad command line.
";
