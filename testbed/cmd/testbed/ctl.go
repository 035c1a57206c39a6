package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// ctlCmd sends one control request to a running bed: apiserver operations go to the
// supervisor's socket, node operations to the node agent's.
func ctlCmd(args []string) error {
	fs := flag.NewFlagSet("ctl", flag.ExitOnError)
	state := stateFlag(fs)
	_ = fs.Parse(args)
	rest := fs.Args()
	if len(rest) == 0 {
		return errors.New("a command is required: restart-apiserver, stop-apiserver, start-apiserver, status, node-lost NAME, node-restore NAME, nodes")
	}
	sock, method, path := "control.sock", http.MethodPost, ""
	switch rest[0] {
	case "restart-apiserver":
		path = "/apiserver/restart"
	case "stop-apiserver":
		path = "/apiserver/stop"
	case "start-apiserver":
		path = "/apiserver/start"
	case "status":
		method, path = http.MethodGet, "/status"
	case "node-lost", "node-restore":
		if len(rest) != 2 {
			return fmt.Errorf("usage: %s NODE", rest[0])
		}
		sock = "node-agent.sock"
		path = map[string]string{"node-lost": "/nodes/%s/lose", "node-restore": "/nodes/%s/restore"}[rest[0]]
		path = fmt.Sprintf(path, rest[1])
	case "nodes":
		sock, method, path = "node-agent.sock", http.MethodGet, "/nodes"
	default:
		return fmt.Errorf("unknown command %q", rest[0])
	}
	sockPath := filepath.Join(*state, sock)
	if _, err := os.Stat(sockPath); err != nil {
		return fmt.Errorf("no test bed running in %s (no %s): run scripts/testbed up", *state, sock)
	}
	client := &http.Client{
		Timeout: 3 * time.Minute,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sockPath)
		}},
	}
	req, _ := http.NewRequest(method, "http://testbed"+path, nil)
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", sockPath, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s: %s", resp.Status, body)
	}
	fmt.Print(string(body))
	return nil
}
