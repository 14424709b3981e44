package cloudemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"syscall"
	"time"
)

// MotoStartTimeout bounds how long StartMoto waits for moto_server to
// answer HTTP.
const MotoStartTimeout = 30 * time.Second

// ErrNoMoto is returned by StartMoto when moto_server is not installed.
var ErrNoMoto = errors.New("moto_server not on PATH (pip install 'moto[server]')")

// motoListening is the line werkzeug prints once moto_server listens; with
// -p0 it is the only place the kernel-chosen port appears.
var motoListening = regexp.MustCompile(`Running on (http://127\.0\.0\.1:[0-9]+)`)

// Moto is a running moto_server of our own.
type Moto struct {
	// Endpoint is its base URL, "http://127.0.0.1:PORT".
	Endpoint string
	cmd      *exec.Cmd
	exited   chan struct{}
}

// StartMoto starts moto_server on a free port of 127.0.0.1 (the given
// port when port is not 0), writing its output to logPath, and returns
// once it answers HTTP.
func StartMoto(ctx context.Context, logPath string, port int) (*Moto, error) {
	bin, err := exec.LookPath("moto_server")
	if err != nil {
		return nil, ErrNoMoto
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	// -p0: the kernel picks the port and moto reports it, so no other
	// process can take it between our choosing and moto's binding.
	cmd := exec.Command(bin, "-H", "127.0.0.1", "-p", fmt.Sprint(port))
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Env = append(os.Environ(), "PYTHONUNBUFFERED=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start moto_server: %w", err)
	}
	m := &Moto{cmd: cmd, exited: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(m.exited)
	}()
	failf := func(format string, args ...any) (*Moto, error) {
		m.Stop()
		log, _ := os.ReadFile(logPath)
		return nil, fmt.Errorf(format+"\nmoto_server output (tail):\n%s", append(args, Tail(log, 40))...)
	}
	ctx, cancel := context.WithTimeout(ctx, MotoStartTimeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for m.Endpoint == "" {
		log, _ := os.ReadFile(logPath)
		if match := motoListening.FindSubmatch(log); match != nil {
			m.Endpoint = string(match[1])
			break
		}
		select {
		case <-m.exited:
			return failf("moto_server exited before listening: %v", cmd.ProcessState)
		case <-ctx.Done():
			return failf("moto_server did not listen within %s", MotoStartTimeout)
		case <-tick.C:
		}
	}
	client := &http.Client{Timeout: time.Second}
	for {
		// Any HTTP answer will do: the server is up.
		res, err := client.Get(m.Endpoint + "/moto-api/")
		if err == nil {
			res.Body.Close()
			return m, nil
		}
		select {
		case <-m.exited:
			return failf("moto_server exited before answering: %v", cmd.ProcessState)
		case <-ctx.Done():
			return failf("moto_server at %s did not answer within %s: %v", m.Endpoint, MotoStartTimeout, err)
		case <-tick.C:
		}
	}
}

// Stop kills moto_server and everything it started, and waits for it.
func (m *Moto) Stop() {
	// The negative pid is the process group: moto_server and anything a
	// wrapper (a pyenv shim) put in between.
	syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL)
	<-m.exited
}

// Tail is the last n lines of b.
func Tail(b []byte, n int) []byte {
	b = bytes.TrimRight(b, "\n")
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == '\n' {
			n--
			if n == 0 {
				return b[i+1:]
			}
		}
	}
	return b
}
