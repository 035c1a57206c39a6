package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/distribution/reference"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"
)

// image is what a container runs from once its image is "pulled": either a root file system
// unpacked from the bed's registry, or a mapping of the config onto the host's root.
type image struct {
	// ID is the container status' imageID: <repo>@sha256:... for a pulled image.
	ID string
	// Rootfs is the unpacked image, the overlay's read-only lower layer; "" is the host's root.
	Rootfs string
	// Entrypoint and Cmd as in the image config (a host mapping's command is its Cmd).
	Entrypoint, Cmd []string
	// Env is the image's environment, in its order.
	Env        []string
	WorkingDir string
	// User is the image config's User ("", "uid", "uid:gid", "name", "name:group").
	User string
	// Mounts of host paths (host mappings only), already expanded.
	Mounts []ImageMount
	// Pulled: from the registry; the container's securityContext user applies (host mappings run
	// as root).
	Pulled bool
}

// hostImage turns a host mapping of the config into an image.
func hostImage(img *ImageConfig, full string) *image {
	keys := make([]string, 0, len(img.Env))
	for k := range img.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := &image{ID: "testbed://" + full, Cmd: img.Command, WorkingDir: img.WorkingDir}
	for _, k := range keys {
		out.Env = append(out.Env, k+"="+img.Env[k])
	}
	for _, m := range img.Mounts {
		out.Mounts = append(out.Mounts, ImageMount{HostPath: os.ExpandEnv(m.HostPath), Path: m.Path, ReadOnly: m.ReadOnly})
	}
	return out
}

// pullAction is what a container start does about its image, given the pull policy.
type pullAction int

const (
	useCached       pullAction = iota // the image this reference was last pulled as
	resolveRegistry                   // ask the registry what the reference is now, pull if new
	refuseNeverPull                   // ErrImageNeverPull
)

// decidePull is the kubelet's rule: Always asks the registry at every start, IfNotPresent only
// when nothing is cached for the reference, Never never (and fails when nothing is cached).
func decidePull(policy corev1.PullPolicy, cached bool) pullAction {
	switch {
	case policy == corev1.PullAlways:
		return resolveRegistry
	case cached:
		return useCached
	case policy == corev1.PullNever:
		return refuseNeverPull
	default:
		return resolveRegistry
	}
}

// effectivePolicy is the API's default when the field is empty: Always for :latest or no tag,
// else IfNotPresent (the apiserver fills it in; this covers pods built by hand in tests).
func effectivePolicy(policy corev1.PullPolicy, named reference.Named) corev1.PullPolicy {
	if policy != "" {
		return policy
	}
	if _, digested := named.(reference.Digested); digested {
		return corev1.PullIfNotPresent
	}
	if t, ok := named.(reference.Tagged); !ok || t.Tag() == "latest" {
		return corev1.PullAlways
	}
	return corev1.PullIfNotPresent
}

// imageStore pulls images from the bed's registry and keeps their root file systems under
// <state>/images: sha256/<manifest digest>/{rootfs,config.json} (written in tmp/ and renamed
// into place, so a reader never sees half an image) and refs/<hash of the reference> (what the
// reference resolved to when last pulled, for IfNotPresent and Never).
type imageStore struct {
	registry string // host:port of the bed's registry; "" when there is none
	dir      string
	remote   []remote.Option

	mu    sync.Mutex
	locks map[string]*sync.Mutex // manifest digest → held while unpacking it
}

func newImageStore(registry, dir string) *imageStore {
	// Loopback only: never through a proxy from the environment.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	return &imageStore{
		registry: registry, dir: dir, locks: map[string]*sync.Mutex{},
		remote: []remote.Option{
			remote.WithTransport(tr), remote.WithUserAgent("flext-node-agent"),
			remote.WithPlatform(v1.Platform{OS: "linux", Architecture: runtime.GOARCH}),
		},
	}
}

// serves reports whether the reference names an image on the bed's registry.
func (s *imageStore) serves(named reference.Named) bool {
	if s.registry == "" {
		return false
	}
	host := reference.Domain(named)
	_, port, _ := strings.Cut(s.registry, ":")
	return host == s.registry || host == "localhost:"+port
}

// refRecord is what a reference resolved to at its last pull.
type refRecord struct {
	Reference string `json:"reference"`
	// Digest is what the registry answered for the reference (an index for multi-platform
	// images): the imageID's digest, as the kubelet reports it.
	Digest string `json:"digest"`
	// Manifest is the digest of the linux/<arch> manifest: the key of the unpacked root.
	Manifest string `json:"manifest"`
}

// pullResult says what happened, for the Pulled event.
type pullResult struct {
	pulled   bool // the registry was asked (else the cached image was used)
	duration time.Duration
	size     int64 // of the layers, compressed, as the manifest says
}

// get returns the image for a reference on the bed's registry, pulling it as the policy says.
// announce is called before the registry is asked.
func (s *imageStore) get(ctx context.Context, named reference.Named, policy corev1.PullPolicy, display string, announce func()) (*image, pullResult, error) {
	named = reference.TagNameOnly(named)
	key := named.String()
	rec, cached := s.readRef(key)
	if cached {
		if _, err := os.Stat(s.imageDir(rec.Manifest)); err != nil {
			cached = false
		}
	}
	switch decidePull(effectivePolicy(policy, named), cached) {
	case refuseNeverPull:
		return nil, pullResult{}, &imageError{"ErrImageNeverPull",
			fmt.Sprintf("Container image %q is not present with pull policy of Never", display)}
	case useCached:
		img, err := s.load(named, rec)
		return img, pullResult{}, err
	}
	announce()
	start := time.Now()
	ref, err := name.ParseReference(key, name.Insecure)
	if err != nil {
		return nil, pullResult{}, &imageError{"InvalidImageName", fmt.Sprintf("Failed to apply default image tag %q: %v", display, err)}
	}
	opts := append([]remote.Option{remote.WithContext(ctx)}, s.remote...)
	pullErr := func(err error) error {
		return &imageError{"ErrImagePull", fmt.Sprintf("Failed to pull image %q: %v", display, err)}
	}
	desc, err := remote.Get(ref, opts...)
	if err != nil {
		return nil, pullResult{}, pullErr(err)
	}
	img, err := desc.Image() // an index resolves to its linux/<arch> manifest
	if err != nil {
		return nil, pullResult{}, pullErr(err)
	}
	manifest, err := img.Digest()
	if err != nil {
		return nil, pullResult{}, pullErr(err)
	}
	rec = refRecord{Reference: key, Digest: desc.Digest.String(), Manifest: manifest.String()}
	// Pulled, as the kubelet says after asking the registry, even when the digest was already
	// unpacked (Always with an unchanged tag).
	res := pullResult{pulled: true}
	if m, err := img.Manifest(); err == nil {
		for _, l := range m.Layers {
			res.size += l.Size
		}
	}
	if _, err := os.Stat(s.imageDir(rec.Manifest)); err != nil {
		if err := s.unpack(img, rec.Manifest); err != nil {
			return nil, pullResult{}, pullErr(err)
		}
	}
	res.duration = time.Since(start)
	if err := s.writeRef(rec); err != nil {
		return nil, pullResult{}, pullErr(err)
	}
	out, err := s.load(named, rec)
	return out, res, err
}

func (s *imageStore) imageDir(digest string) string {
	alg, hex, _ := strings.Cut(digest, ":")
	return filepath.Join(s.dir, alg, hex)
}

func (s *imageStore) refPath(ref string) string {
	sum := sha256.Sum256([]byte(ref))
	return filepath.Join(s.dir, "refs", hex.EncodeToString(sum[:]))
}

func (s *imageStore) readRef(ref string) (refRecord, bool) {
	var rec refRecord
	raw, err := os.ReadFile(s.refPath(ref))
	if err != nil || json.Unmarshal(raw, &rec) != nil || rec.Reference != ref {
		return refRecord{}, false
	}
	return rec, true
}

func (s *imageStore) writeRef(rec refRecord) error {
	raw, _ := json.Marshal(rec)
	return writeFileAtomic(s.refPath(rec.Reference), raw)
}

// unpack fetches the image's layers and unpacks them, in order, into a fresh directory that is
// then renamed to its digest's place. Pulls of the same image in this agent wait for each other;
// should two unpack it anyway, the second rename fails and its copy is thrown away.
func (s *imageStore) unpack(img v1.Image, digest string) error {
	s.mu.Lock()
	l, ok := s.locks[digest]
	if !ok {
		l = &sync.Mutex{}
		s.locks[digest] = l
	}
	s.mu.Unlock()
	l.Lock()
	defer l.Unlock()
	final := s.imageDir(digest)
	if _, err := os.Stat(final); err == nil {
		return nil // unpacked by the pull we waited for
	}
	if err := os.MkdirAll(filepath.Join(s.dir, "tmp"), 0o700); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Join(s.dir, "tmp"), "unpack-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	rootfs := filepath.Join(tmp, "rootfs")
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for i, layer := range layers {
		rc, err := layer.Uncompressed()
		if err != nil {
			return fmt.Errorf("layer %d: %w", i, err)
		}
		err = unpackLayer(rootfs, rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("unpack layer %d: %w", i, err)
		}
	}
	config, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tmp, "config.json"), config, 0o644); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
		return err
	}
	if err := os.Rename(tmp, final); err != nil {
		if _, statErr := os.Stat(final); statErr == nil {
			return nil // another agent process won the race: same content
		}
		return err
	}
	return nil
}

// load reads an unpacked image's config.
func (s *imageStore) load(named reference.Named, rec refRecord) (*image, error) {
	dir := s.imageDir(rec.Manifest)
	raw, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, &imageError{"ErrImagePull", fmt.Sprintf("Failed to pull image %q: cached image %s is unreadable: %v", named, rec.Manifest, err)}
	}
	var cf v1.ConfigFile
	if err := json.Unmarshal(raw, &cf); err != nil {
		return nil, &imageError{"ErrImagePull", fmt.Sprintf("Failed to pull image %q: image config: %v", named, err)}
	}
	return &image{
		ID:         named.Name() + "@" + rec.Digest,
		Rootfs:     filepath.Join(dir, "rootfs"),
		Entrypoint: cf.Config.Entrypoint, Cmd: cf.Config.Cmd, Env: cf.Config.Env,
		WorkingDir: cf.Config.WorkingDir, User: cf.Config.User, Pulled: true,
	}, nil
}

func writeFileAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		_ = os.Remove(f.Name())
	}
	return err
}

// pullImage "pulls" a container's image: from the bed's registry when the reference names it,
// else through the config's host mappings.
func (a *agent) pullImage(ctx context.Context, pod *corev1.Pod, c *corev1.Container) (*image, error) {
	named, err := reference.ParseNormalizedNamed(c.Image)
	if err == nil && a.images.serves(named) {
		// As the kubelet: "Pulling" when the registry is asked, "already present" on a cache hit.
		pulling := func() { a.event(pod, corev1.EventTypeNormal, "Pulling", fmt.Sprintf("Pulling image %q", c.Image)) }
		img, res, err := a.images.get(ctx, named, c.ImagePullPolicy, c.Image, pulling)
		switch {
		case err != nil:
		case res.pulled:
			a.event(pod, corev1.EventTypeNormal, "Pulled", fmt.Sprintf("Successfully pulled image %q in %s. Image size: %d bytes.",
				c.Image, res.duration.Round(time.Millisecond), res.size))
		default:
			a.event(pod, corev1.EventTypeNormal, "Pulled", fmt.Sprintf("Container image %q already present on machine", c.Image))
		}
		return img, err
	}
	cfg, full, err := a.cfg.resolveImage(c.Image)
	if err != nil {
		return nil, err
	}
	return hostImage(cfg, full), nil
}
