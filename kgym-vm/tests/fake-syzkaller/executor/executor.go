// A stand-in for syzkaller's syz-executor (see ../README.md): started as
// `syz-executor runner 0 localhost PORT` by syz-execprog, it connects back
// and runs each program it is sent, every call in its own goroutine with a
// timeout, as raw system calls.
package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/google/syzkaller/prog"
)

func main() {
	if len(os.Args) != 5 || os.Args[1] != "runner" {
		fmt.Fprintf(os.Stderr, "usage: syz-executor runner <id> <addr> <port>\n")
		os.Exit(1)
	}
	addr := os.Args[3]
	if addr == "localhost" {
		addr = "127.0.0.1"
	}
	conn, err := net.Dial("tcp", net.JoinHostPort(addr, os.Args[4]))
	if err != nil {
		fmt.Fprintf(os.Stderr, "SYZFAIL: failed to connect to manager\n%v\n", err)
		os.Exit(1)
	}
	fmt.Fprintf(conn, "hello %v\n", prog.GitRevision)
	r := bufio.NewReader(conn)
	for {
		header, err := r.ReadString('\n')
		if err != nil {
			os.Exit(0)
		}
		var slowdown, size int
		var threaded bool
		if _, err := fmt.Sscanf(header, "exec %d %t %d", &slowdown, &threaded, &size); err != nil {
			fmt.Fprintf(os.Stderr, "SYZFAIL: bad request %q\n", header)
			os.Exit(1)
		}
		text := make([]byte, size)
		if _, err := io.ReadFull(r, text); err != nil {
			os.Exit(0)
		}
		p, err := prog.Parse(string(text), func(name string) bool { _, ok := prog.Number(name); return ok })
		if err != nil {
			fmt.Fprintf(os.Stderr, "SYZFAIL: %v\n", err)
			os.Exit(1)
		}
		run(p, time.Duration(max(slowdown, 1))*50*time.Millisecond)
		fmt.Fprintf(conn, "done %v\n", len(p.Calls))
	}
}

// run makes each call, leaving behind the ones still blocked after timeout.
func run(p *prog.Prog, timeout time.Duration) {
	for _, c := range p.Calls {
		nr, _ := prog.Number(c.Name)
		var a [6]uintptr
		for i := 0; i < len(c.Args) && i < len(a); i++ {
			a[i] = uintptr(c.Args[i])
		}
		done := make(chan struct{})
		go func() {
			syscall.Syscall6(nr, a[0], a[1], a[2], a[3], a[4], a[5])
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(timeout):
		}
	}
}
