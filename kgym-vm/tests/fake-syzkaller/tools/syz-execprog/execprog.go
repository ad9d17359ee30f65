// A stand-in for syzkaller's syz-execprog (see ../../README.md): the same
// flags, the same log lines at the same moments, programs run by the
// executor it starts and talks to over TCP on localhost.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/syzkaller/prog"
)

var (
	flagOS         = flag.String("os", runtime.GOOS, "target os")
	flagArch       = flag.String("arch", runtime.GOARCH, "target arch")
	flagVMArch     = flag.String("vmarch", "", "target VM arch (if different from -arch)")
	flagType       = flag.String("type", "", "target VM type")
	flagCoverFile  = flag.String("coverfile", "", "write coverage to the file")
	flagRepeat     = flag.Int("repeat", 1, "repeat execution that many times (0 for infinite loop)")
	flagProcs      = flag.Int("procs", 2*runtime.NumCPU(), "number of parallel processes to execute programs")
	flagOutput     = flag.Bool("output", false, "write programs and results to stdout")
	flagHints      = flag.Bool("hints", false, "do a hints-generation run")
	flagEnable     = flag.String("enable", "none", "enable only listed additional features")
	flagDisable    = flag.String("disable", "none", "enable all additional features except listed")
	flagExecutor   = flag.String("executor", "./syz-executor", "path to executor binary")
	flagThreaded   = flag.Bool("threaded", true, "use threaded mode in executor")
	flagSignal     = flag.Bool("cover", false, "collect feedback signals (coverage)")
	flagSandbox    = flag.String("sandbox", "none", "sandbox for fuzzing (none/setuid/namespace/android)")
	flagSandboxArg = flag.Int("sandbox_arg", 0, "argument for sandbox runner to adjust it via config")
	flagDebug      = flag.Bool("debug", false, "debug output from executor")
	flagSlowdown   = flag.Int("slowdown", 1, "execution slowdown caused by emulation/instrumentation")
	flagUnsafe     = flag.Bool("unsafe", false, "use unsafe program deserialization mode")
	flagGlob       = flag.String("glob", "", "run glob expansion request")
	flagStress     = flag.Bool("stress", false, "enable stress mode (local fuzzer)")
	flagSyscalls   = flag.String("syscalls", "", "comma-separated list of enabled syscalls for the stress mode")
	flagGDB        = flag.Bool("gdb", false, "start executor under gdb")
	_              = flag.Bool("collide", false, "(DEPRECATED) collide syscalls to provoke data races")
	// Registered by syzkaller's pkg/log and pkg/tool.
	_ = flag.Int("vv", 0, "verbosity")
	_ = flag.String("optional", "", "optional flags for programmatic use only")
	_ = flag.String("cpuprofile", "", "write CPU profile to this file")
	_ = flag.String("memprofile", "", "write memory profile to this file")
)

type context struct {
	progs     []*prog.Prog
	repeat    int
	output    bool
	posMu     sync.Mutex
	pos       int
	lastPrint time.Time
	logMu     sync.Mutex
	completed atomic.Int64
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func main() {
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: execprog [flags] file-with-programs-or-corpus.db+\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	_ = []any{flagOS, flagArch, flagVMArch, flagType, flagCoverFile, flagHints, flagEnable, flagDisable,
		flagSignal, flagSandboxArg, flagDebug, flagUnsafe, flagGlob, flagStress, flagSyscalls, flagGDB}
	switch *flagSandbox {
	case "none", "setuid", "namespace", "android":
	default:
		fail("failed to parse sandbox: unknown sandbox %v", *flagSandbox)
	}
	progs := loadPrograms(flag.Args())
	if len(progs) == 0 {
		flag.Usage()
		os.Exit(1)
	}
	ln, err := net.Listen("tcp", ":0")
	if err != nil {
		fail("failed to listen: %v", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	log.Printf("serving rpc on tcp://%v", port)

	cmd := exec.Command(*flagExecutor, "runner", "0", "localhost", strconv.Itoa(port))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		fail("failed to start executor: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			accepted <- c
		}
	}()
	var conn net.Conn
	select {
	case conn = <-accepted:
	case err := <-exited:
		fail("executor process exited: %v", err)
	}
	ex := &executor{conn: conn, r: bufio.NewReader(conn)}
	if hello, err := ex.r.ReadString('\n'); err != nil || !strings.HasPrefix(hello, "hello") {
		fail("connection error: handshake: %q %v", hello, err)
	}
	ctx := &context{progs: progs, repeat: *flagRepeat, output: *flagOutput}
	var wg sync.WaitGroup
	for p := 0; p < max(*flagProcs, 1); p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx.run(ex)
		}()
	}
	go func() {
		err := <-exited
		fail("executor process exited: %v", err)
	}()
	wg.Wait()
}

func (ctx *context) run(ex *executor) {
	for {
		idx := ctx.getProgramIndex()
		if idx < 0 {
			return
		}
		p := ctx.progs[idx]
		if ctx.output {
			ctx.logMu.Lock()
			log.Printf("executing program:\n%s", p.Text)
			ctx.logMu.Unlock()
		}
		if err := ex.exec(p); err != nil {
			fail("connection error: %v", err)
		}
		ctx.completed.Add(1)
	}
}

// getProgramIndex hands out the next program, printing the count at most
// every 5 s, when the program list starts over.
func (ctx *context) getProgramIndex() int {
	ctx.posMu.Lock()
	defer ctx.posMu.Unlock()
	if ctx.repeat > 0 && ctx.pos >= len(ctx.progs)*ctx.repeat {
		return -1
	}
	idx := ctx.pos % len(ctx.progs)
	if idx == 0 && time.Since(ctx.lastPrint) > 5*time.Second {
		log.Printf("executed programs: %v", ctx.pos)
		ctx.lastPrint = time.Now()
	}
	ctx.pos++
	return idx
}

// executor is the connection to the executor; one request at a time.
type executor struct {
	mu   sync.Mutex
	conn net.Conn
	r    *bufio.Reader
}

func (ex *executor) exec(p *prog.Prog) error {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	req := fmt.Sprintf("exec %d %v %d\n%s", *flagSlowdown, *flagThreaded, len(p.Text), p.Text)
	if _, err := ex.conn.Write([]byte(req)); err != nil {
		return err
	}
	reply, err := ex.r.ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(reply, "done") {
		return fmt.Errorf("unexpected reply %q", reply)
	}
	return nil
}

func loadPrograms(files []string) []*prog.Prog {
	var progs []*prog.Prog
	for _, fn := range files {
		data, err := os.ReadFile(fn)
		if err != nil {
			log.Fatalf("failed to read log file: %v", err)
		}
		known := func(name string) bool { _, ok := prog.Number(name); return ok }
		if p, err := prog.Parse(string(data), known); err == nil {
			progs = append(progs, p)
		}
	}
	log.Printf("parsed %v programs", len(progs))
	return progs
}
