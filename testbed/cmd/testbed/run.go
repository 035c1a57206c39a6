package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"
)

// bed is one running test bed.
type bed struct {
	state, bin, nodeConfig string
	pki                    *pki
	apiPort                int
	apiserver, kcm, agent  *component
	registry               *imageRegistry
	mu                     sync.Mutex // serialises apiserver stop/start
	log                    *os.File
}

func runCmd(args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	state := stateFlag(fs)
	bin := fs.String("bin", "", "directory holding kube-apiserver, kube-controller-manager and node-agent")
	nodeConfig := fs.String("node-config", "", "node agent configuration (YAML)")
	readyTimeout := fs.Duration("ready-timeout", 3*time.Minute, "how long to wait for the API and the nodes")
	_ = fs.Parse(args)
	if *bin == "" || *nodeConfig == "" {
		return errors.New("--bin and --node-config are required")
	}
	b := &bed{state: *state, bin: *bin, nodeConfig: *nodeConfig}
	for _, name := range []string{"kube-apiserver", "kube-controller-manager", "node-agent"} {
		if _, err := os.Stat(filepath.Join(b.bin, name)); err != nil {
			return fmt.Errorf("missing binary %s in %s (build with testbed/hack/build.sh)", name, b.bin)
		}
	}
	for _, d := range []string{"logs", "etcd"} {
		if err := os.MkdirAll(filepath.Join(b.state, d), 0o700); err != nil {
			return err
		}
	}
	var err error
	b.log = os.Stderr
	start := time.Now()
	logf := func(format string, a ...any) {
		fmt.Fprintf(b.log, "%s testbed: %s\n", time.Now().Format(time.RFC3339Nano), fmt.Sprintf(format, a...))
	}
	if b.pki, err = newPKI(filepath.Join(b.state, "pki")); err != nil {
		return fmt.Errorf("generate certificates: %w", err)
	}
	ports, err := freePorts(4)
	if err != nil {
		return err
	}
	b.apiPort = ports[0]
	etcdClient, etcdPeer, kubeletPort := ports[1], ports[2], ports[3]
	if err := b.writeKubeconfigs(); err != nil {
		return err
	}

	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()

	etcd, err := startEtcd(filepath.Join(b.state, "etcd"), etcdClient, etcdPeer)
	if err != nil {
		return err
	}
	defer etcd.Close()
	logf("etcd ready on 127.0.0.1:%d (%.1fs)", etcdClient, time.Since(start).Seconds())

	if b.registry, err = startRegistry(b.state); err != nil {
		return err
	}
	defer b.registry.stop()
	logf("image registry on http://%s (blobs in %s)", b.registry.addr, b.registry.blobs)

	b.apiserver = b.newComponent("kube-apiserver", b.apiserverArgs(etcdClient))
	b.kcm = b.newComponent("kube-controller-manager", b.kcmArgs())
	b.agent = b.newComponent("node-agent", []string{
		"--kubeconfig", filepath.Join(b.state, "node-agent.kubeconfig"),
		"--config", b.nodeConfig,
		"--state", filepath.Join(b.state, "node-agent"),
		"--port", strconv.Itoa(kubeletPort),
		"--tls-cert", b.pki.kubeletCert, "--tls-key", b.pki.kubeletKey, "--client-ca", b.pki.caCert,
		"--control-socket", filepath.Join(b.state, "node-agent.sock"),
		"--registry", b.registry.addr,
	})
	all := []*component{b.apiserver, b.kcm, b.agent}
	defer func() {
		// Reverse order: the agent first (it kills the pod processes), the apiserver last.
		for i := len(all) - 1; i >= 0; i-- {
			all[i].stop(stopGrace(all[i]))
		}
		logf("stopped")
	}()

	if err := b.apiserver.start(); err != nil {
		return err
	}
	client, err := b.client()
	if err != nil {
		return err
	}
	if err := waitAPIReady(ctx, client, *readyTimeout, b.apiserver); err != nil {
		return err
	}
	logf("kube-apiserver ready on https://127.0.0.1:%d (%.1fs)", b.apiPort, time.Since(start).Seconds())
	if err := b.kcm.start(); err != nil {
		return err
	}
	if err := b.agent.start(); err != nil {
		return err
	}
	if err := b.serveControl(ctx); err != nil {
		return err
	}
	if err := b.waitReady(ctx, client, *readyTimeout); err != nil {
		return err
	}
	if err := b.writeEnv(); err != nil {
		return err
	}
	// The ready file is what `scripts/testbed up` waits for.
	if err := os.WriteFile(filepath.Join(b.state, "ready"), []byte(time.Now().Format(time.RFC3339)+"\n"), 0o644); err != nil {
		return err
	}
	logf("ready: nodes Ready, controllers running (%.1fs)", time.Since(start).Seconds())

	select {
	case <-ctx.Done():
		logf("signal received, stopping")
	case err := <-etcd.Err():
		return fmt.Errorf("embedded etcd failed: %w", err)
	}
	return nil
}

func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func (b *bed) apiURL() string { return fmt.Sprintf("https://127.0.0.1:%d", b.apiPort) }

func (b *bed) writeKubeconfigs() error {
	ca, err := os.ReadFile(b.pki.caCert)
	if err != nil {
		return err
	}
	for file, tok := range map[string]string{
		"kubeconfig":                         b.pki.adminToken,
		"kube-controller-manager.kubeconfig": b.pki.kcmToken,
		"node-agent.kubeconfig":              b.pki.nodeToken,
	} {
		cfg := clientcmdapi.NewConfig()
		cfg.Clusters["testbed"] = &clientcmdapi.Cluster{Server: b.apiURL(), CertificateAuthorityData: ca}
		cfg.AuthInfos["testbed"] = &clientcmdapi.AuthInfo{Token: tok}
		cfg.Contexts["testbed"] = &clientcmdapi.Context{Cluster: "testbed", AuthInfo: "testbed", Namespace: "default"}
		cfg.CurrentContext = "testbed"
		if err := clientcmd.WriteToFile(*cfg, filepath.Join(b.state, file)); err != nil {
			return err
		}
	}
	return nil
}

func (b *bed) writeEnv() error {
	env := fmt.Sprintf(`export KUBECONFIG=%s
export FLEXT_TESTBED_DIR=%s
export FLEXT_TESTBED_APISERVER=%s
export FLEXT_TESTBED_REGISTRY=%s
export PATH=%s:$PATH
export NO_PROXY=127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}
export no_proxy=127.0.0.1,localhost${no_proxy:+,$no_proxy}
`, filepath.Join(b.state, "kubeconfig"), b.state, b.apiURL(), b.registry.addr, filepath.Join(b.state, "tools"))
	return os.WriteFile(filepath.Join(b.state, "env"), []byte(env), 0o644)
}

func (b *bed) client() (*kubernetes.Clientset, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(b.state, "kubeconfig"))
	if err != nil {
		return nil, err
	}
	cfg.Timeout = 10 * time.Second
	return kubernetes.NewForConfig(cfg)
}

func (b *bed) apiserverArgs(etcdPort int) []string {
	p := b.pki
	return []string{
		"--etcd-servers", fmt.Sprintf("http://127.0.0.1:%d", etcdPort),
		"--bind-address", "127.0.0.1",
		"--advertise-address", "127.0.0.1",
		"--secure-port", strconv.Itoa(b.apiPort),
		"--cert-dir", filepath.Join(b.state, "pki", "apiserver-generated"),
		"--tls-cert-file", p.apiserverCert, "--tls-private-key-file", p.apiKey,
		"--client-ca-file", p.caCert,
		"--token-auth-file", p.tokenFile,
		"--authorization-mode", "RBAC",
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file", p.saPub,
		"--service-account-signing-key-file", p.saKey,
		"--api-audiences", "https://kubernetes.default.svc.cluster.local",
		"--service-cluster-ip-range", "10.0.0.0/24",
		"--endpoint-reconciler-type", "none",
		"--allow-privileged=true",
		// Without the node-lifecycle controller nothing would lift the not-ready taint this plugin
		// puts on new nodes; the node agent reports Ready itself.
		"--disable-admission-plugins", "TaintNodesByCondition",
		"--kubelet-preferred-address-types", "InternalIP",
		"--kubelet-certificate-authority", p.caCert,
		"--kubelet-client-certificate", p.kubeletClientCert, "--kubelet-client-key", p.kubeletClientKey,
		"--enable-priority-and-fairness=false",
		"--profiling=false",
		"--v", "1",
	}
}

func (b *bed) kcmArgs() []string {
	p := b.pki
	kc := filepath.Join(b.state, "kube-controller-manager.kubeconfig")
	return []string{
		"--kubeconfig", kc,
		"--authentication-kubeconfig", kc,
		"--authorization-kubeconfig", kc,
		"--bind-address", "127.0.0.1",
		"--secure-port", "0",
		"--leader-elect=false",
		"--use-service-account-credentials=false",
		// The controllers the bed promises (resourcequota: quota admission needs its usage);
		// serviceaccount-token and root-ca-cert-publisher make
		// pods' projected service account volumes resolvable; statefulset and disruption run
		// the worker as the Helm chart installs it (a StatefulSet with a PodDisruptionBudget).
		"--controllers", "job,ttl-after-finished,garbagecollector,podgc,namespace,serviceaccount,serviceaccount-token,root-ca-cert-publisher,resourcequota,statefulset,disruption",
		"--service-account-private-key-file", p.saKey,
		"--root-ca-file", p.caCert,
		// The defaults (20 QPS) would throttle the job controller below the worker's 50 jobs/s target.
		"--kube-api-qps", "300", "--kube-api-burst", "600",
		"--concurrent-job-syncs", "10",
		"--profiling=false",
		"--v", "1",
	}
}

// waitAPIReady polls /readyz until the apiserver answers ok.
func waitAPIReady(ctx context.Context, c *kubernetes.Clientset, timeout time.Duration, proc *component) error {
	deadline := time.Now().Add(timeout)
	var last string
	for {
		body, err := c.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err == nil && strings.TrimSpace(string(body)) == "ok" {
			return nil
		}
		if err != nil {
			last = err.Error()
		}
		if proc != nil && proc.exited() {
			return fmt.Errorf("kube-apiserver exited during start-up; see %s", proc.logPath)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("kube-apiserver not ready after %s (last: %s); see %s", timeout, last, proc.logPath)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitReady waits until every configured node is Ready and the default namespace has its
// ServiceAccount and root CA ConfigMap (pods are refused or stuck without them).
func (b *bed) waitReady(ctx context.Context, c *kubernetes.Clientset, timeout time.Duration) error {
	raw, err := os.ReadFile(b.nodeConfig)
	if err != nil {
		return err
	}
	var cfg struct {
		Nodes []struct {
			Name string `json:"name"`
		} `json:"nodes"`
	}
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		return fmt.Errorf("parse %s: %w", b.nodeConfig, err)
	}
	deadline := time.Now().Add(timeout)
	for {
		missing := b.notReady(ctx, c, cfg.Nodes)
		if missing == "" {
			return nil
		}
		for _, comp := range []*component{b.kcm, b.agent} {
			if comp.exited() {
				return fmt.Errorf("%s exited during start-up; see %s", comp.name, comp.logPath)
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("bed not ready after %s: %s", timeout, missing)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (b *bed) notReady(ctx context.Context, c *kubernetes.Clientset, nodes []struct {
	Name string `json:"name"`
}) string {
	for _, n := range nodes {
		node, err := c.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			return fmt.Sprintf("node %s: %v", n.Name, err)
		}
		ready := false
		for _, cond := range node.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				ready = true
			}
		}
		if !ready {
			return fmt.Sprintf("node %s not Ready", n.Name)
		}
	}
	if _, err := c.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{}); err != nil {
		return "ServiceAccount default/default: " + reason(err)
	}
	if _, err := c.CoreV1().ConfigMaps("default").Get(ctx, "kube-root-ca.crt", metav1.GetOptions{}); err != nil {
		return "ConfigMap default/kube-root-ca.crt: " + reason(err)
	}
	return ""
}

func reason(err error) string {
	if apierrors.IsNotFound(err) {
		return "not created yet"
	}
	return err.Error()
}

// serveControl answers scripts/testbed's control requests on <state>/control.sock.
func (b *bed) serveControl(ctx context.Context) error {
	path := filepath.Join(b.state, "control.sock")
	_ = os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	mux := http.NewServeMux()
	client, err := b.client()
	if err != nil {
		return err
	}
	mux.HandleFunc("POST /apiserver/stop", func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.apiserver.stop(stopGrace(b.apiserver))
		fmt.Fprintln(w, "kube-apiserver stopped")
	})
	startAPI := func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		defer b.mu.Unlock()
		if r.URL.Path == "/apiserver/restart" {
			b.apiserver.stop(stopGrace(b.apiserver))
		}
		if !b.apiserver.exited() {
			fmt.Fprintln(w, "kube-apiserver already running")
			return
		}
		t := time.Now()
		if err := b.apiserver.start(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if err := waitAPIReady(r.Context(), client, 2*time.Minute, b.apiserver); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "kube-apiserver ready after %.1fs\n", time.Since(t).Seconds())
	}
	mux.HandleFunc("POST /apiserver/start", startAPI)
	mux.HandleFunc("POST /apiserver/restart", startAPI)
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		for _, c := range []*component{b.apiserver, b.kcm, b.agent} {
			state := "running"
			if c.exited() {
				state = "stopped"
			}
			fmt.Fprintf(w, "%-24s %-8s pid %d  log %s\n", c.name, state, c.pid(), c.logPath)
		}
		state := "running"
		if !b.registry.running() {
			state = "stopped"
		}
		fmt.Fprintf(w, "%-24s %-8s %s (in the supervisor)  log %s\n", "registry", state, b.registry.addr, b.registry.logPath)
	})
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(l) }()
	go func() { <-ctx.Done(); _ = srv.Close() }()
	return nil
}

// stopGrace is how long a component gets between SIGTERM and SIGKILL. kube-apiserver v1.36
// stops listening and drains non-watch requests within a second of SIGTERM but then may not
// exit for a minute (observed here); a few seconds keep restarts quick and still graceful for
// clients, which see their connections closed as in a real rollout.
func stopGrace(c *component) time.Duration {
	if c.name == "kube-apiserver" {
		return 5 * time.Second
	}
	return 20 * time.Second
}

// component is one supervised child process.
type component struct {
	name, path, logPath string
	args                []string
	mu                  sync.Mutex
	cmd                 *exec.Cmd
	done                chan struct{}
}

func (b *bed) newComponent(name string, args []string) *component {
	return &component{name: name, path: filepath.Join(b.bin, name), args: args, logPath: filepath.Join(b.state, "logs", name+".log")}
}

func (c *component) start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	logFile, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(logFile, "==== %s starting %s\n", time.Now().Format(time.RFC3339Nano), c.name)
	cmd := exec.Command(c.path, c.args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// The apiserver proxies log requests to the node agent: never through an HTTP proxy.
	cmd.Env = append(os.Environ(), "NO_PROXY=127.0.0.1,localhost", "no_proxy=127.0.0.1,localhost")
	// If this supervisor dies without stopping its children, the kernel kills them.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("start %s: %w", c.name, err)
	}
	done := make(chan struct{})
	c.cmd, c.done = cmd, done
	go func() {
		err := cmd.Wait()
		fmt.Fprintf(logFile, "==== %s %s exited: %v\n", time.Now().Format(time.RFC3339Nano), c.name, err)
		logFile.Close()
		close(done)
	}()
	return nil
}

func (c *component) exited() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		return true
	}
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

func (c *component) pid() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil || c.cmd.Process == nil {
		return 0
	}
	return c.cmd.Process.Pid
}

// stop sends SIGTERM, waits up to grace, then SIGKILLs.
func (c *component) stop(grace time.Duration) {
	c.mu.Lock()
	cmd, done := c.cmd, c.done
	c.mu.Unlock()
	if cmd == nil || done == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-done
	}
}
