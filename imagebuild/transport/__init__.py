"""Moving images in and out of the store: OCI image layouts and docker-archive (docker save) tarballs.

Import checks everything before the store changes: every blob against its digest, every layer's uncompressed
stream against the config's diff_id, every tar entry for escapes (absolute paths, `..`, links out). Only then
are layers moved in and the image registered, so a bad input leaves the store as it was.
"""

from imagebuild.transport.archive import export_docker_archive, import_docker_archive
from imagebuild.transport.layout import export_oci_layout, import_oci_layout

__all__ = ["export_docker_archive", "export_oci_layout", "import_docker_archive", "import_oci_layout"]
