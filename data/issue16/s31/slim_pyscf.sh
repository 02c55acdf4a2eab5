# PySCF's wheel slimmed for the GPU image (which has no PySCF): without libxc, the periodic code, ADC, C sources,
# tests and the basis sets H16 does not use; ~11 MB as .tar.xz (sessions 26 and 31).
#   bash data/issue16/s31/slim_pyscf.sh WHEEL OUT.tar.xz
set -eu
wheel=$(realpath "$1"); out=$(realpath "$2"); tmp=$(mktemp -d)
(cd "$tmp" && unzip -q "$wheel" 'pyscf/*' -x 'pyscf/pbc/*' 'pyscf/adc/*' 'pyscf/lib/deps/lib/libxc.so*' \
   '*.c' '*.h' 'pyscf/gto/basis/*/*' 'pyscf/gto/basis/*.dat' \
 && unzip -qn "$wheel" 'pyscf/gto/basis/*sto*' 'pyscf/gto/basis/ano.dat' 'pyscf/gto/basis/minao*' \
 && tar cJf - pyscf) > "$out"
rm -rf "$tmp"
