package main

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	securejoin "github.com/cyphar/filepath-securejoin"
	"golang.org/x/sys/unix"
)

const (
	whiteoutPrefix = ".wh."
	opaqueWhiteout = ".wh..wh..opq"
)

// unpackLayer applies one uncompressed layer tar to root, as the OCI image spec's changeset
// rules say: entries are added or replace what lower layers left; `.wh.NAME` removes NAME of the
// lower layers; `.wh..wh..opq` in a directory hides everything the lower layers had in it (the
// entries of this same layer stay, whatever their order in the tar). Paths never leave root: they
// are resolved as if root were `/`, symlinks included. Ownership and modes (setuid included) are
// kept; extended attributes are not.
func unpackLayer(root string, r io.Reader) error {
	tr := tar.NewReader(r)
	ours := map[string]bool{} // paths this layer created
	var opaque []string       // directories this layer makes opaque
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		clean := path.Clean("/" + hdr.Name)
		if clean == "/" {
			continue
		}
		dir, base := path.Split(clean)
		parent, err := securejoin.SecureJoin(root, dir)
		if err != nil {
			return fmt.Errorf("%s: %w", hdr.Name, err)
		}
		switch {
		case base == opaqueWhiteout:
			opaque = append(opaque, path.Clean(dir))
			continue
		case strings.HasPrefix(base, whiteoutPrefix):
			if err := os.RemoveAll(filepath.Join(parent, base[len(whiteoutPrefix):])); err != nil {
				return err
			}
			continue
		}
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return err
		}
		target := filepath.Join(parent, base)
		if err := unpackEntry(root, target, hdr, tr); err != nil {
			return fmt.Errorf("%s: %w", hdr.Name, err)
		}
		// The entry and its parents are this layer's (a parent may come only implicitly).
		for p := clean; p != "/"; p = path.Dir(p) {
			ours[p] = true
		}
	}
	for _, dir := range opaque {
		if err := hideLower(root, dir, ours); err != nil {
			return err
		}
	}
	return nil
}

// hideLower removes from dir whatever this layer did not create (an opaque directory).
func hideLower(root, dir string, ours map[string]bool) error {
	host, err := securejoin.SecureJoin(root, dir)
	if err != nil {
		return err
	}
	entries, err := os.ReadDir(host)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		p := path.Join(dir, e.Name())
		if ours[p] {
			// Re-created by this layer: what the lower layers had below it is hidden too.
			if e.IsDir() {
				if err := hideLower(root, p, ours); err != nil {
					return err
				}
			}
			continue
		}
		if err := os.RemoveAll(filepath.Join(host, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func unpackEntry(root, target string, hdr *tar.Header, content io.Reader) error {
	existing, statErr := os.Lstat(target)
	if statErr == nil && !(hdr.Typeflag == tar.TypeDir && existing.IsDir()) {
		// Replaced: a directory by a non-directory takes its contents with it.
		if err := os.RemoveAll(target); err != nil {
			return err
		}
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		if statErr != nil || !existing.IsDir() {
			if err := os.Mkdir(target, 0o755); err != nil {
				return err
			}
		}
	case tar.TypeReg: // archive/tar reports the old TypeRegA as TypeReg
		f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
		if err != nil {
			return err
		}
		_, err = io.Copy(f, content)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	case tar.TypeSymlink:
		if err := os.Symlink(hdr.Linkname, target); err != nil {
			return err
		}
	case tar.TypeLink:
		// The link's target is a path of the image: resolve its directory inside root, but not
		// its last component (a hard link to a symlink links the symlink).
		linkDir, linkBase := path.Split(path.Clean("/" + hdr.Linkname))
		d, err := securejoin.SecureJoin(root, linkDir)
		if err != nil {
			return err
		}
		if err := os.Link(filepath.Join(d, linkBase), target); err != nil {
			return err
		}
		return nil // shares the inode's owner and mode
	case tar.TypeFifo:
		if err := syscall.Mkfifo(target, uint32(hdr.Mode&0o7777)); err != nil {
			return err
		}
	case tar.TypeChar, tar.TypeBlock:
		kind := uint32(syscall.S_IFCHR)
		if hdr.Typeflag == tar.TypeBlock {
			kind = syscall.S_IFBLK
		}
		dev := unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
		if err := syscall.Mknod(target, kind|uint32(hdr.Mode&0o7777), int(dev)); err != nil {
			return err
		}
	default:
		return nil // pax/GNU metadata entries and the like: nothing to create
	}
	if err := os.Lchown(target, hdr.Uid, hdr.Gid); err != nil {
		return err
	}
	if hdr.Typeflag == tar.TypeSymlink {
		return nil
	}
	// After chown, which clears setuid/setgid bits.
	if err := syscall.Chmod(target, uint32(hdr.Mode&0o7777)); err != nil {
		return err
	}
	if hdr.Typeflag == tar.TypeReg {
		return os.Chtimes(target, hdr.AccessTime, hdr.ModTime)
	}
	return nil
}
