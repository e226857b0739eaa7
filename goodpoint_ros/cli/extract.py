"""``python -m goodpoint_ros.cli.extract`` = ``goodpoint-extract`` (for environments without the script)."""

import sys

from goodpoint_ros.cli.match import extract_main

if __name__ == "__main__":
    sys.exit(extract_main())
