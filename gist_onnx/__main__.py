from gist_onnx.cli import main

raise SystemExit(main())
