"""Regenerate trt_plugins_cpp/common/op_contract.h from the YAML contract."""
import sys

from plugins.contract import CPP_HEADER_PATH, emit_cpp_header

if __name__ == "__main__":
    text = emit_cpp_header()
    if "--check" in sys.argv:
        ok = CPP_HEADER_PATH.exists() and CPP_HEADER_PATH.read_text() == text
        print("op_contract.h is up to date" if ok else "op_contract.h is stale: run python -m plugins.contract")
        sys.exit(0 if ok else 1)
    CPP_HEADER_PATH.parent.mkdir(parents=True, exist_ok=True)
    CPP_HEADER_PATH.write_text(text)
    print(f"wrote {CPP_HEADER_PATH}")
