package imagebuilder

// Architecture is the Debian/Go architecture of every image the builder
// makes: it installs linux-image-amd64 and GRUB's x86_64-efi and i386-pc
// loaders. It is recorded in the manifest and the OCI artifacts' platform.
const Architecture = "amd64"
