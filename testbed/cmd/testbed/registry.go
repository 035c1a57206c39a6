package main

import (
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
)

// imageRegistry is the bed's OCI distribution registry: go-containerregistry's pkg/registry
// served over plain HTTP on a free loopback port. Blobs are files under the state directory;
// manifests and tags live in the supervisor's memory, so the registry's content lasts as long as
// the bed (every `up` starts empty, like the rest of the state).
type imageRegistry struct {
	addr, blobs, logPath string
	srv                  *http.Server
	done                 chan struct{}
}

func startRegistry(state string) (*imageRegistry, error) {
	r := &imageRegistry{
		blobs: filepath.Join(state, "registry", "blobs"), logPath: filepath.Join(state, "logs", "registry.log"),
		done: make(chan struct{}),
	}
	if err := os.MkdirAll(r.blobs, 0o755); err != nil {
		return nil, err
	}
	logFile, err := os.OpenFile(r.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		logFile.Close()
		return nil, fmt.Errorf("registry: %w", err)
	}
	r.addr = ln.Addr().String()
	handler := registry.New(
		registry.WithBlobHandler(registry.NewDiskBlobHandler(r.blobs)),
		registry.Logger(log.New(logFile, "", log.LstdFlags|log.Lmicroseconds)),
	)
	r.srv = &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(r.done)
		defer logFile.Close()
		if err := r.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintf(logFile, "registry stopped: %v\n", err)
		}
	}()
	return r, nil
}

func (r *imageRegistry) running() bool {
	select {
	case <-r.done:
		return false
	default:
		return true
	}
}

func (r *imageRegistry) stop() {
	_ = r.srv.Close()
	<-r.done
}
