package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Container logs are stored as the CRI runtimes store them, one record per line:
//
//	<RFC3339Nano timestamp> <stdout|stderr> <F|P> <content>
//
// P marks a partial record (a line longer than maxLogLine, continued by the next record).

const maxLogLine = 16 * 1024

// logWriter appends a container's output to its log file.
type logWriter struct {
	mu sync.Mutex
	f  *os.File
}

func newLogWriter(path string) (*logWriter, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	return &logWriter{f: f}, nil
}

func (w *logWriter) record(stream string, partial bool, line []byte) {
	tag := "F"
	if partial {
		tag = "P"
	}
	var b bytes.Buffer
	b.WriteString(time.Now().UTC().Format(time.RFC3339Nano))
	b.WriteByte(' ')
	b.WriteString(stream)
	b.WriteByte(' ')
	b.WriteString(tag)
	b.WriteByte(' ')
	b.Write(line)
	b.WriteByte('\n')
	w.mu.Lock()
	_, _ = w.f.Write(b.Bytes())
	w.mu.Unlock()
}

// copyStream reads one of the process's output pipes until EOF.
func (w *logWriter) copyStream(stream string, r io.Reader) {
	br := bufio.NewReaderSize(r, maxLogLine)
	for {
		line, err := br.ReadSlice('\n')
		switch {
		case err == nil:
			w.record(stream, false, line[:len(line)-1])
		case errors.Is(err, bufio.ErrBufferFull):
			w.record(stream, true, line)
		default:
			if len(line) > 0 { // a last line without newline
				w.record(stream, false, line)
			}
			return
		}
	}
}

func (w *logWriter) close() { _ = w.f.Close() }

// logEntry is one line of output, partial records joined.
type logEntry struct {
	ts     time.Time
	stream string
	line   []byte // with trailing newline
}

// parseRecord parses one CRI log record.
func parseRecord(rec []byte) (ts time.Time, stream string, partial bool, content []byte, err error) {
	parts := bytes.SplitN(rec, []byte{' '}, 4)
	if len(parts) != 4 {
		return ts, "", false, nil, fmt.Errorf("malformed log record")
	}
	ts, err = time.Parse(time.RFC3339Nano, string(parts[0]))
	return ts, string(parts[1]), string(parts[2]) == "P", parts[3], err
}

// logOptions are the kubelet's containerLogs query parameters.
type logOptions struct {
	follow, timestamps bool
	tailLines          int64 // -1: all
	limitBytes         int64 // -1: unlimited
	since              time.Time
}

func parseLogOptions(q map[string][]string) (logOptions, error) {
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	o := logOptions{tailLines: -1, limitBytes: -1}
	o.follow = get("follow") == "true" || get("follow") == "1"
	o.timestamps = get("timestamps") == "true" || get("timestamps") == "1"
	for key, dst := range map[string]*int64{"tailLines": &o.tailLines, "limitBytes": &o.limitBytes} {
		if v := get(key); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return o, fmt.Errorf("invalid %s %q", key, v)
			}
			*dst = n
		}
	}
	if v := get("sinceSeconds"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			return o, fmt.Errorf("invalid sinceSeconds %q", v)
		}
		o.since = time.Now().Add(-time.Duration(n) * time.Second)
	}
	if v := get("sinceTime"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return o, fmt.Errorf("invalid sinceTime %q", v)
		}
		o.since = t
	}
	return o, nil
}

// streamLog writes a container's log to w according to o. running reports whether the
// container may still write; a followed stream ends once it has stopped and the file is drained.
func streamLog(w io.Writer, flush func(), path string, o logOptions, running func() bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	written := int64(0)
	emit := func(e logEntry) bool { // false: limit reached
		if !o.since.IsZero() && e.ts.Before(o.since) {
			return true
		}
		var out []byte
		if o.timestamps {
			out = append(out, e.ts.Format(time.RFC3339Nano)...)
			out = append(out, ' ')
		}
		out = append(out, e.line...)
		if o.limitBytes >= 0 && written+int64(len(out)) > o.limitBytes {
			out = out[:o.limitBytes-written]
			_, _ = w.Write(out)
			return false
		}
		written += int64(len(out))
		_, _ = w.Write(out)
		return true
	}
	r := bufio.NewReader(f)
	var pending []byte // a record read without its newline yet
	var partial *logEntry
	next := func() (*logEntry, bool) { // returns an entry, or false at current EOF
		for {
			chunk, err := r.ReadBytes('\n')
			pending = append(pending, chunk...)
			if err != nil {
				return nil, false
			}
			rec := bytes.TrimSuffix(pending, []byte{'\n'})
			pending = nil
			ts, stream, isPartial, content, perr := parseRecord(rec)
			if perr != nil {
				continue
			}
			if partial == nil {
				partial = &logEntry{ts: ts, stream: stream}
			}
			partial.line = append(partial.line, content...)
			if isPartial {
				continue
			}
			e := partial
			e.line = append(e.line, '\n')
			partial = nil
			return e, true
		}
	}
	// The existing content first (tailLines applies to it only, as with the kubelet).
	var existing []logEntry
	for {
		e, ok := next()
		if !ok {
			break
		}
		existing = append(existing, *e)
	}
	if o.tailLines >= 0 && int64(len(existing)) > o.tailLines {
		existing = existing[int64(len(existing))-o.tailLines:]
	}
	for _, e := range existing {
		if !emit(e) {
			return nil
		}
	}
	flush()
	if !o.follow {
		return nil
	}
	for {
		// Read "running" before draining: if it was already stopped, the drain sees everything.
		stillRunning := running()
		for {
			e, ok := next()
			if !ok {
				break
			}
			if !emit(*e) {
				return nil
			}
		}
		flush()
		if !stillRunning {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// serveContainerLogs handles GET /containerLogs/{namespace}/{pod}/{container}, the endpoint the
// apiserver proxies pods/log requests to.
func (a *agent) serveContainerLogs(w http.ResponseWriter, r *http.Request) {
	ns, podName, container := r.PathValue("namespace"), r.PathValue("pod"), r.PathValue("container")
	opts, err := parseLogOptions(r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	pw := a.pods.byName(ns, podName)
	if pw == nil {
		http.Error(w, fmt.Sprintf("pod %q in namespace %q not found on this node", podName, ns), http.StatusNotFound)
		return
	}
	previous := isTrue(r.URL.Query().Get("previous"))
	path, running, err := pw.logFor(container, previous)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("Transfer-Encoding", "chunked")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	flush := func() {
		if flusher != nil {
			flusher.Flush()
		}
	}
	ctx := r.Context()
	_ = streamLog(w, flush, path, opts, func() bool {
		return ctx.Err() == nil && running()
	})
}

func isTrue(s string) bool { return strings.EqualFold(s, "true") || s == "1" }
