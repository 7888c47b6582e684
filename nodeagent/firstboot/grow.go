package firstboot

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/debvisor/debvisor/osimage"
)

// GrowStamp records the size of the disk the data partition was last grown
// to fill; GrowData does nothing while the disk keeps that size.
const GrowStamp = "/var/lib/debvisor/data-grown"

// GrowData grows debvisor-data (always the last partition) to the end of
// its disk and then its ext4, both online (debvisor-growdata.service, every
// boot). A disk of the size recorded in stamp was already filled: nothing
// runs, so later boots pay nothing; a disk made larger since (a bigger
// virtual disk, an image written to a larger drive) is filled on the next
// boot.
func GrowData(ctx context.Context, log *slog.Logger, stamp string) error {
	link := filepath.Join("/dev/disk/by-partlabel", osimage.LabelData)
	if err := run(ctx, "udevadm", "wait", "--timeout=30", link); err != nil {
		return fmt.Errorf("waiting for %s: %w", link, err)
	}
	dev, disk, part, err := dataPartition(link)
	if err != nil {
		return err
	}
	size, err := os.ReadFile(filepath.Join("/sys/class/block", filepath.Base(disk), "size"))
	if err != nil {
		return err
	}
	sectors := strings.TrimSpace(string(size))
	if b, err := os.ReadFile(stamp); err == nil && strings.TrimSpace(string(b)) == sectors {
		log.Info("data partition already fills the disk", "disk", disk, "sectors", sectors)
		return nil
	}
	out, err := output(ctx, "growpart", disk, part)
	switch {
	case err == nil:
		log.Info("data partition grown", "disk", disk, "partition", part, "growpart", strings.TrimSpace(out))
	case strings.Contains(out, "NOCHANGE"):
		log.Info("data partition already fills the disk", "disk", disk)
	default:
		return fmt.Errorf("growpart %s %s: %w: %s", disk, part, err, out)
	}
	if out, err := output(ctx, "resize2fs", dev); err != nil {
		return fmt.Errorf("resize2fs %s: %w: %s", dev, err, out)
	}
	log.Info("data filesystem fills its partition", "device", dev)
	return writeFile(stamp, []byte(sectors+"\n"), 0o644)
}

// dataPartition resolves the data partition's link to its device, its disk
// and its partition number.
func dataPartition(link string) (dev, disk, part string, err error) {
	dev, err = filepath.EvalSymlinks(link)
	if err != nil {
		return "", "", "", fmt.Errorf("find %s: %w", link, err)
	}
	name := filepath.Base(dev)
	num, err := os.ReadFile(filepath.Join("/sys/class/block", name, "partition"))
	if err != nil {
		return dev, "", "", fmt.Errorf("%s is not a partition: %w", dev, err)
	}
	sys, err := filepath.EvalSymlinks(filepath.Join("/sys/class/block", name))
	if err != nil {
		return dev, "", "", err
	}
	return dev, "/dev/" + filepath.Base(filepath.Dir(sys)), strings.TrimSpace(string(num)), nil
}
