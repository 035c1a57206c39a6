package main

import (
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/distribution/reference"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"
)

// Config is the node agent's configuration file (testbed/config/node-agent.yaml is the default).
type Config struct {
	// Nodes this agent registers and runs pods for.
	Nodes []NodeConfig `json:"nodes"`
	// Images maps image references to what runs on the host; the first match wins. An image that
	// matches nothing cannot be "pulled" (ErrImagePull, then ImagePullBackOff).
	Images []ImageConfig `json:"images"`
	// MemoryEnforcement: auto (cgroup v2, else cgroup v1, else an RSS watchdog), cgroup, or watchdog.
	MemoryEnforcement string `json:"memoryEnforcement"`
}

// NodeConfig describes one Node.
type NodeConfig struct {
	Name     string              `json:"name"`
	Capacity corev1.ResourceList `json:"capacity"`
	Labels   map[string]string   `json:"labels"`
	Taints   []corev1.Taint      `json:"taints"`
}

// ImageConfig is one image mapping.
type ImageConfig struct {
	// Match: globs (`*` matches any run of characters) compared with both the familiar reference
	// ("python:3.12") and the fully qualified one ("docker.io/library/python:3.12"). A reference
	// without tag is compared with ":latest" appended.
	Match []string `json:"match"`
	// Command is the image's ENTRYPOINT+CMD: used when the container has no command and no args.
	Command []string `json:"command"`
	// Env is the image's environment (PATH, ...), overridden by the container's env.
	Env map[string]string `json:"env"`
	// WorkingDir is the image's WORKDIR (default "/").
	WorkingDir string `json:"workingDir"`
	// Mounts make host directories appear inside every container of this image, e.g. the
	// worker's own binaries for its image. hostPath may use ${VAR} (expanded at pull time, so a
	// build made after `scripts/testbed up` is picked up).
	Mounts []ImageMount `json:"mounts"`

	patterns []*regexp.Regexp
}

// ImageMount is a host directory or file bound into containers of an image.
type ImageMount struct {
	HostPath string `json:"hostPath"`
	Path     string `json:"path"`
	ReadOnly bool   `json:"readOnly"`
}

func loadConfig(path string) (*Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var c Config
	if err := yaml.UnmarshalStrict(raw, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(c.Nodes) == 0 {
		return nil, fmt.Errorf("%s: no nodes configured", path)
	}
	seen := map[string]bool{}
	for i, n := range c.Nodes {
		if n.Name == "" || seen[n.Name] {
			return nil, fmt.Errorf("%s: nodes[%d]: missing or duplicate name %q", path, i, n.Name)
		}
		seen[n.Name] = true
		if c.Nodes[i].Capacity == nil {
			c.Nodes[i].Capacity = corev1.ResourceList{}
		}
		defaults := corev1.ResourceList{
			corev1.ResourceCPU: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse("8Gi"),
			corev1.ResourcePods: resource.MustParse("110"), corev1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
		}
		for k, v := range defaults {
			if _, ok := c.Nodes[i].Capacity[k]; !ok {
				c.Nodes[i].Capacity[k] = v
			}
		}
	}
	for i := range c.Images {
		for _, m := range c.Images[i].Match {
			re := "^" + strings.ReplaceAll(regexp.QuoteMeta(m), `\*`, ".*") + "$"
			c.Images[i].patterns = append(c.Images[i].patterns, regexp.MustCompile(re))
		}
	}
	switch c.MemoryEnforcement {
	case "":
		c.MemoryEnforcement = "auto"
	case "auto", "cgroup", "watchdog":
	default:
		return nil, fmt.Errorf("%s: memoryEnforcement must be auto, cgroup or watchdog", path)
	}
	return &c, nil
}

// imageError is a pull failure: Reason is InvalidImageName or ErrImagePull.
type imageError struct{ Reason, Message string }

func (e *imageError) Error() string { return e.Message }

// resolveImage "pulls" an image: finds its mapping.
func (c *Config) resolveImage(image string) (*ImageConfig, string, error) {
	named, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return nil, "", &imageError{"InvalidImageName",
			fmt.Sprintf("Failed to apply default image tag %q: couldn't parse image name %q: %v", image, image, err)}
	}
	named = reference.TagNameOnly(named)
	familiar, full := reference.FamiliarString(named), named.String()
	for i := range c.Images {
		for _, p := range c.Images[i].patterns {
			if p.MatchString(familiar) || p.MatchString(full) {
				img := &c.Images[i]
				for _, m := range img.Mounts {
					host := os.ExpandEnv(m.HostPath)
					if _, err := os.Stat(host); err != nil {
						return nil, "", &imageError{"ErrImagePull", fmt.Sprintf(
							"Failed to pull image %q: the test bed maps it to host path %q (from %q), which is missing: %v",
							image, host, m.HostPath, err)}
					}
				}
				return img, full, nil
			}
		}
	}
	return nil, "", &imageError{"ErrImagePull", fmt.Sprintf(
		"Failed to pull image %q: rpc error: code = NotFound desc = failed to pull and unpack image %q: %s: not found (no mapping in the test bed's node-agent config)",
		image, full, full)}
}
