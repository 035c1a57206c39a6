package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
	corev1 "k8s.io/api/core/v1"
)

// identity is who a container's process runs as.
type identity struct {
	UID, GID uint32
	// Groups are the supplementary groups: the primary group, the user's groups in the image's
	// /etc/group, the pod's fsGroup and supplementalGroups.
	Groups []uint32
	// Home is the user's home directory in the image's /etc/passwd ("/" without an entry): HOME
	// unless the image or the container sets it, as runc does.
	Home string
}

// securityUser is the effective user settings of a container: its own securityContext, falling
// back to the pod's, as the kubelet merges them.
type securityUser struct {
	runAsUser, runAsGroup *int64
	runAsNonRoot          bool
	fsGroup               *int64
	supplemental          []int64
}

func effectiveSecurity(pod *corev1.Pod, c *corev1.Container) securityUser {
	var s securityUser
	if psc := pod.Spec.SecurityContext; psc != nil {
		s.runAsUser, s.runAsGroup, s.fsGroup, s.supplemental = psc.RunAsUser, psc.RunAsGroup, psc.FSGroup, psc.SupplementalGroups
		s.runAsNonRoot = psc.RunAsNonRoot != nil && *psc.RunAsNonRoot
	}
	if csc := c.SecurityContext; csc != nil {
		if csc.RunAsUser != nil {
			s.runAsUser = csc.RunAsUser
		}
		if csc.RunAsGroup != nil {
			s.runAsGroup = csc.RunAsGroup
		}
		if csc.RunAsNonRoot != nil {
			s.runAsNonRoot = *csc.RunAsNonRoot
		}
	}
	return s
}

// podDescription is how the kubelet names a pod in messages (format.Pod).
func podDescription(pod *corev1.Pod) string {
	return fmt.Sprintf("%s_%s(%s)", pod.Name, pod.Namespace, pod.UID)
}

// verifyRunAsNonRoot is the kubelet's check, made before the runtime resolves any name: with
// runAsNonRoot, a runAsUser of 0, an image user of root (or none), or a non-numeric image user
// (which cannot be verified) refuse to start the container.
func verifyRunAsNonRoot(s securityUser, imageUser string, pod *corev1.Pod, c *corev1.Container) error {
	if !s.runAsNonRoot {
		return nil
	}
	if s.runAsUser != nil {
		if *s.runAsUser == 0 {
			return &configError{fmt.Sprintf("container's runAsUser breaks non-root policy (pod: %q, container: %s)", podDescription(pod), c.Name)}
		}
		return nil
	}
	user, _, _ := strings.Cut(imageUser, ":")
	if user == "" {
		user = "0"
	}
	uid, err := strconv.ParseInt(user, 10, 64)
	switch {
	case err != nil:
		return &configError{fmt.Sprintf("container has runAsNonRoot and image has non-numeric user (%s), cannot verify user is non-root (pod: %q, container: %s)", user, podDescription(pod), c.Name)}
	case uid == 0:
		return &configError{fmt.Sprintf("container has runAsNonRoot and image will run as root (pod: %q, container: %s)", podDescription(pod), c.Name)}
	}
	return nil
}

// passwdEntry is a line of /etc/passwd or /etc/group.
type passwdEntry struct {
	name    string
	id, gid uint32
	home    string
	members []string // /etc/group only
}

// readIDFile parses the image's /etc/passwd (file "passwd") or /etc/group ("group"); a missing
// file has no entries.
func readIDFile(rootfs, file string) []passwdEntry {
	p, err := securejoin.SecureJoin(rootfs, "/etc/"+file)
	if err != nil {
		return nil
	}
	f, err := os.Open(p)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []passwdEntry
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Split(line, ":")
		if len(fields) < 3 {
			continue
		}
		id, err := strconv.ParseUint(fields[2], 10, 32)
		if err != nil {
			continue
		}
		e := passwdEntry{name: fields[0], id: uint32(id)}
		if file == "passwd" && len(fields) >= 6 {
			if gid, err := strconv.ParseUint(fields[3], 10, 32); err == nil {
				e.gid = uint32(gid)
			}
			e.home = fields[5]
		}
		if file == "group" && len(fields) >= 4 && fields[3] != "" {
			e.members = strings.Split(fields[3], ",")
		}
		out = append(out, e)
	}
	return out
}

// resolveIdentity computes who the container runs as, as containerd does from the kubelet's
// request: runAsUser (uid) replaces the image's User entirely, its group then coming from the
// image's /etc/passwd; without it the image's User ("uid", "uid:gid", "name", "name:group")
// applies, names resolved through the image's /etc/passwd and /etc/group; runAsGroup replaces
// the group either way. An unresolvable name is a CreateContainerConfigError.
func resolveIdentity(rootfs, imageUser string, s securityUser, imageRef string) (identity, error) {
	passwd, groups := readIDFile(rootfs, "passwd"), readIDFile(rootfs, "group")
	byUID := func(uid uint32) *passwdEntry {
		for i := range passwd {
			if passwd[i].id == uid {
				return &passwd[i]
			}
		}
		return nil
	}
	var id identity
	var entry *passwdEntry
	var gid *uint32
	userPart, groupPart, hasGroup := strings.Cut(imageUser, ":")
	if s.runAsUser != nil {
		id.UID = uint32(*s.runAsUser)
		entry = byUID(id.UID)
	} else {
		if userPart == "" {
			userPart = "0"
		}
		if n, err := strconv.ParseUint(userPart, 10, 32); err == nil {
			id.UID = uint32(n)
			entry = byUID(id.UID)
		} else {
			for i := range passwd {
				if passwd[i].name == userPart {
					entry = &passwd[i]
				}
			}
			if entry == nil {
				return identity{}, &configError{fmt.Sprintf("failed to resolve user %q of image %q: no matching entries in passwd file", userPart, imageRef)}
			}
			id.UID = entry.id
		}
		if hasGroup && groupPart != "" {
			if n, err := strconv.ParseUint(groupPart, 10, 32); err == nil {
				g := uint32(n)
				gid = &g
			} else {
				for i := range groups {
					if groups[i].name == groupPart {
						g := groups[i].id
						gid = &g
					}
				}
				if gid == nil {
					return identity{}, &configError{fmt.Sprintf("failed to resolve group %q of image %q: no matching entries in group file", groupPart, imageRef)}
				}
			}
		}
	}
	switch {
	case s.runAsGroup != nil:
		id.GID = uint32(*s.runAsGroup)
	case gid != nil:
		id.GID = *gid
	case entry != nil:
		id.GID = entry.gid
	}
	id.Home = "/"
	if entry != nil && entry.home != "" {
		id.Home = entry.home
	}
	seen := map[uint32]bool{}
	add := func(g uint32) {
		if !seen[g] {
			seen[g] = true
			id.Groups = append(id.Groups, g)
		}
	}
	add(id.GID)
	if entry != nil {
		for _, g := range groups {
			for _, m := range g.members {
				if m == entry.name {
					add(g.id)
				}
			}
		}
	}
	if s.fsGroup != nil {
		add(uint32(*s.fsGroup))
	}
	for _, g := range s.supplemental {
		add(uint32(g))
	}
	return id, nil
}
