// Command node-agent stands in for the kubelet in the flext test bed: it registers Nodes, binds
// pending pods that fit them, runs their containers as local processes (each in a private mount
// namespace over the host's file system), reports their status, and serves the kubelet's
// containerLogs endpoint. See testbed/README.md for what it does and does not emulate.
package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listerscorev1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/component-base/version"
	"k8s.io/klog/v2"
)

type agent struct {
	ctx        context.Context
	cfg        *Config
	client     kubernetes.Interface
	podLister  listerscorev1.PodLister
	cmLister   listerscorev1.ConfigMapLister
	secLister  listerscorev1.SecretLister
	pods       *podManager
	sched      *scheduler
	memory     *memoryLimiter
	images     *imageStore
	stateDir   string
	self       string // this binary, re-executed as the container shim
	port       int
	apiPort    string
	k8sVersion string
	bootID     string
	started    metav1.Time

	eventsMu     sync.Mutex
	recentEvents map[string]time.Time

	nodesMu sync.Mutex
	lost    map[string]context.CancelFunc // node name → stop its heartbeat; nil value: lost
	live    map[string]context.CancelFunc
}

func main() {
	if len(os.Args) == 3 && os.Args[1] == shimArg {
		shimMain(os.Args[2])
		return
	}
	klog.InitFlags(nil)
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the apiserver")
	configPath := flag.String("config", "", "node agent configuration (YAML)")
	state := flag.String("state", "/tmp/flext-testbed/node-agent", "directory for pod sandboxes and logs")
	port := flag.Int("port", 10250, "HTTPS port of the kubelet endpoint (containerLogs)")
	tlsCert := flag.String("tls-cert", "", "serving certificate")
	tlsKey := flag.String("tls-key", "", "serving key")
	clientCA := flag.String("client-ca", "", "CA that signs the apiserver's client certificate; when set, the kubelet endpoint requires one")
	control := flag.String("control-socket", "", "unix socket for test controls (node-lost, node-restore)")
	registry := flag.String("registry", os.Getenv("FLEXT_TESTBED_REGISTRY"),
		"host:port of the bed's image registry (plain HTTP): images named there are pulled, others mapped by the config")
	flag.Parse()
	if err := run(*kubeconfig, *configPath, *state, *port, *tlsCert, *tlsKey, *clientCA, *control, *registry); err != nil {
		fmt.Fprintln(os.Stderr, "node-agent:", err)
		os.Exit(1)
	}
}

func run(kubeconfig, configPath, state string, port int, tlsCert, tlsKey, clientCA, control, registry string) error {
	cfg, err := loadConfig(configPath)
	if err != nil {
		return err
	}
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	rc.QPS, rc.Burst = 200, 400
	rc.UserAgent = "flext-node-agent"
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	_, apiPort, _ := net.SplitHostPort(trimScheme(rc.Host))
	a := &agent{
		ctx: ctx, cfg: cfg, client: client, stateDir: state, self: self, port: port, apiPort: apiPort,
		k8sVersion: version.Get().GitVersion, bootID: randomID(), started: metav1.Now(),
		lost: map[string]context.CancelFunc{}, live: map[string]context.CancelFunc{},
		recentEvents: map[string]time.Time{},
		images:       newImageStore(registry, filepath.Join(state, "images")),
	}
	a.pods = &podManager{a: a, workers: map[types.UID]*podWorker{}}
	a.sched = newScheduler(a)
	if a.memory, err = newMemoryLimiter(cfg.MemoryEnforcement, "flext-testbed-"+filepath.Base(filepath.Dir(state))); err != nil {
		return err
	}
	klog.Background().Info("memory limits enforced by", "mode", a.memory.mode)
	if err := os.MkdirAll(filepath.Join(state, "pids"), 0o755); err != nil {
		return err
	}
	if err := selfCheck(); err != nil {
		return err
	}

	// The kubelet endpoint, on loopback only.
	mux := http.NewServeMux()
	mux.HandleFunc("GET /containerLogs/{namespace}/{pod}/{container}", a.serveContainerLogs)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	srv := &http.Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	if clientCA != "" {
		// As a kubelet with x509 authentication: only the apiserver (or another holder of a
		// certificate from the bed's CA) may read logs.
		pem, err := os.ReadFile(clientCA)
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("no certificate in %s", clientCA)
		}
		srv.TLSConfig = &tls.Config{ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
	}
	ln, err := net.Listen("tcp", srv.Addr)
	if err != nil {
		return fmt.Errorf("kubelet endpoint: %w", err)
	}
	go func() { _ = srv.ServeTLS(ln, tlsCert, tlsKey) }()
	if control != "" {
		if err := a.serveControl(ctx, control); err != nil {
			return err
		}
	}

	factory := informers.NewSharedInformerFactory(client, 0)
	podInformer := factory.Core().V1().Pods()
	a.podLister = podInformer.Lister()
	_, _ = podInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { a.onPod(obj.(*corev1.Pod)) },
		UpdateFunc: func(_, obj any) { a.onPod(obj.(*corev1.Pod)) },
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if p, ok := obj.(*corev1.Pod); ok {
				a.pods.forget(p.UID, false)
				a.sched.kick()
			}
		},
	})
	a.cmLister = factory.Core().V1().ConfigMaps().Lister()
	a.secLister = factory.Core().V1().Secrets().Lister()
	factory.Start(ctx.Done())
	for _, nc := range cfg.Nodes {
		a.startNode(nc)
	}
	factory.WaitForCacheSync(ctx.Done())
	go a.sched.run(ctx)
	klog.Background().Info("node agent running", "nodes", len(cfg.Nodes), "port", port, "registry", registry)
	<-ctx.Done()

	// Shutting down: every container process dies with the agent.
	for _, w := range a.pods.all() {
		w.mu.Lock()
		w.silent = true
		w.grace = 0
		w.mu.Unlock()
		w.stop()
	}
	deadline := time.After(10 * time.Second)
	for _, w := range a.pods.all() {
		select {
		case <-w.finished:
		case <-deadline:
		}
	}
	a.killTrackedPids()
	_ = srv.Close()
	return nil
}

func trimScheme(h string) string {
	for _, p := range []string{"https://", "http://"} {
		if len(h) > len(p) && h[:len(p)] == p {
			return h[len(p):]
		}
	}
	return h
}

func randomID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// selfCheck fails early, with a clear message, where containers could not be run.
func selfCheck() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("the node agent must run as root: it gives each container a private mount namespace")
	}
	return nil
}

func (a *agent) onPod(p *corev1.Pod) {
	if p.Spec.NodeName == "" {
		a.sched.kick()
		return
	}
	a.nodesMu.Lock()
	_, mine := a.live[p.Spec.NodeName]
	a.nodesMu.Unlock()
	if mine {
		a.pods.observe(p)
	}
	if isTerminal(p) || p.DeletionTimestamp != nil {
		a.sched.kick()
	}
}

func (a *agent) startNode(nc NodeConfig) {
	ctx, cancel := context.WithCancel(a.ctx)
	a.nodesMu.Lock()
	a.live[nc.Name] = cancel
	delete(a.lost, nc.Name)
	a.nodesMu.Unlock()
	go a.registerNode(ctx, nc)
}

// liveNodes are the Node objects the scheduler may bind to (not lost).
func (a *agent) liveNodes() []*corev1.Node {
	a.nodesMu.Lock()
	defer a.nodesMu.Unlock()
	var out []*corev1.Node
	for _, nc := range a.cfg.Nodes {
		if _, ok := a.live[nc.Name]; ok {
			out = append(out, a.nodeObject(nc))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// loseNode simulates a node vanishing: its processes are killed with no status reported, its
// heartbeat stops and its Node object is deleted (as a cloud provider does for a lost VM). The
// pod GC controller then fails and deletes the orphaned pods (after its 40s quarantine).
func (a *agent) loseNode(name string) error {
	a.nodesMu.Lock()
	cancel, ok := a.live[name]
	if ok {
		delete(a.live, name)
		a.lost[name] = nil
	}
	a.nodesMu.Unlock()
	if !ok {
		return fmt.Errorf("node %q is not live on this agent", name)
	}
	cancel()
	for _, w := range a.pods.onNode(name) {
		a.pods.forget(w.uid, true)
	}
	err := a.client.CoreV1().Nodes().Delete(a.ctx, name, metav1.DeleteOptions{})
	klog.Background().Info("node lost", "node", name)
	return err
}

func (a *agent) restoreNode(name string) error {
	for _, nc := range a.cfg.Nodes {
		if nc.Name == name {
			a.nodesMu.Lock()
			_, live := a.live[name]
			a.nodesMu.Unlock()
			if live {
				return fmt.Errorf("node %q is already live", name)
			}
			a.startNode(nc)
			return nil
		}
	}
	return fmt.Errorf("node %q is not in the agent's configuration", name)
}

func (a *agent) serveControl(ctx context.Context, path string) error {
	_ = os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /nodes/{name}/lose", func(w http.ResponseWriter, r *http.Request) {
		if err := a.loseNode(r.PathValue("name")); err != nil {
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		fmt.Fprintf(w, "node %s lost: its processes were killed and the Node deleted; the pod GC fails and deletes its pods within about a minute\n", r.PathValue("name"))
	})
	mux.HandleFunc("POST /nodes/{name}/restore", func(w http.ResponseWriter, r *http.Request) {
		if err := a.restoreNode(r.PathValue("name")); err != nil {
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		fmt.Fprintf(w, "node %s registering again\n", r.PathValue("name"))
	})
	mux.HandleFunc("GET /nodes", func(w http.ResponseWriter, r *http.Request) {
		a.nodesMu.Lock()
		defer a.nodesMu.Unlock()
		for _, nc := range a.cfg.Nodes {
			state := "lost"
			if _, ok := a.live[nc.Name]; ok {
				state = "live"
			}
			fmt.Fprintf(w, "%s %s\n", nc.Name, state)
		}
	})
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(l) }()
	go func() { <-ctx.Done(); _ = srv.Close() }()
	return nil
}

// event records a Kubernetes Event about a pod, best effort. Repeats of the same event for the
// same pod within a minute are dropped (the kubelet aggregates them instead).
func (a *agent) event(p *corev1.Pod, typ, reason, msg string) {
	key := string(p.UID) + "/" + reason + "/" + msg
	a.eventsMu.Lock()
	if last, ok := a.recentEvents[key]; ok && time.Since(last) < time.Minute {
		a.eventsMu.Unlock()
		return
	}
	if len(a.recentEvents) > 10000 {
		a.recentEvents = map[string]time.Time{}
	}
	a.recentEvents[key] = time.Now()
	a.eventsMu.Unlock()
	now := metav1.Now()
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{GenerateName: p.Name + ".", Namespace: p.Namespace},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: p.Namespace, Name: p.Name,
			UID: p.UID, ResourceVersion: p.ResourceVersion},
		Reason: reason, Message: msg, Type: typ, FirstTimestamp: now, LastTimestamp: now, Count: 1,
		Source: corev1.EventSource{Component: "flext-node-agent", Host: p.Spec.NodeName},
	}
	go func() {
		ctx, cancel := context.WithTimeout(a.ctx, 5*time.Second)
		defer cancel()
		_, _ = a.client.CoreV1().Events(p.Namespace).Create(ctx, ev, metav1.CreateOptions{})
	}()
}

// trackPid records container processes in <state>/pids so `scripts/testbed down` can sweep
// them even if the agent was killed with SIGKILL.
func (a *agent) trackPid(pid int, add bool) {
	p := filepath.Join(a.stateDir, "pids", strconv.Itoa(pid))
	if add {
		_ = os.WriteFile(p, nil, 0o644)
	} else {
		_ = os.Remove(p)
	}
}

func (a *agent) killTrackedPids() {
	entries, _ := os.ReadDir(filepath.Join(a.stateDir, "pids"))
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// configMap reads from the informer cache, falling back to the API for one created a moment
// ago (the worker creates a Job's ConfigMap just before the Job).
func (a *agent) configMap(ctx context.Context, ns, name string) (*corev1.ConfigMap, error) {
	if cm, err := a.cmLister.ConfigMaps(ns).Get(name); err == nil {
		return cm, nil
	}
	return a.client.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
}

// secret: as configMap.
func (a *agent) secret(ctx context.Context, ns, name string) (*corev1.Secret, error) {
	if s, err := a.secLister.Secrets(ns).Get(name); err == nil {
		return s, nil
	}
	return a.client.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
}
