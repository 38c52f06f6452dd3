# Debian packages of the binaries, one per CPack component:
#   fedge-edge   the edge node, its systemd unit and /etc/fedge/edge.flags (a conffile)
#   fedge-cloud  the coordinator, its systemd unit and /etc/fedge/cloud.flags (a conffile)
#   fedgectl     the operators' command line
# `make package` builds them into build/packages/. Depends are computed by dpkg-shlibdeps from
# the shared libraries the binaries really link (dpkg-dev, from scripts/bootstrap.sh), so a
# package installs on Debian 12 with `apt install ./fedge-edge_<version>_<arch>.deb`.
include_guard(GLOBAL)

set(FEDGE_PACKAGE_MAINTAINER "fedge maintainers <fedge@fedge.example>"
    CACHE STRING "Maintainer field of the .deb packages")
set(FEDGE_PACKAGE_HOMEPAGE "https://fedge.example/"
    CACHE STRING "Homepage field of the .deb packages")
# Debian's own locations, whatever the install prefix: a service's unit and its configuration
# are found there and nowhere else.
set(FEDGE_SYSTEMD_UNIT_DIR "/lib/systemd/system" CACHE PATH "Where systemd units are installed")
set(FEDGE_CONFIG_DIR "/etc/fedge" CACHE PATH "Where the services' flag files are installed")

# The binaries are installed by their own folders (install(TARGETS ... COMPONENT ...)). This adds
# what a service needs beside its binary: unit, flag file, maintainer scripts and conffiles.
function(fedge_service_package component package flags_file state_dir)
  set(FEDGE_PACKAGE ${package})
  set(FEDGE_FLAGS ${FEDGE_CONFIG_DIR}/${flags_file})
  set(FEDGE_STATE_DIR ${state_dir})
  set(control_dir ${PROJECT_BINARY_DIR}/packaging/${package})
  foreach(script postinst prerm postrm)
    configure_file(${PROJECT_SOURCE_DIR}/packaging/debian/${script}.in ${control_dir}/${script}
      @ONLY FILE_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE
                             WORLD_READ WORLD_EXECUTE)
  endforeach()
  # CPack, unlike debhelper, does not mark files under /etc as conffiles by itself.
  configure_file(${PROJECT_SOURCE_DIR}/packaging/debian/conffiles.in ${control_dir}/conffiles @ONLY)
  string(TOUPPER ${component} c)
  set(CPACK_DEBIAN_${c}_PACKAGE_CONTROL_EXTRA
      ${control_dir}/postinst ${control_dir}/prerm ${control_dir}/postrm ${control_dir}/conffiles
      PARENT_SCOPE)

  install(FILES ${PROJECT_SOURCE_DIR}/packaging/systemd/${package}.service
    DESTINATION ${FEDGE_SYSTEMD_UNIT_DIR} COMPONENT ${component})
  install(FILES ${PROJECT_SOURCE_DIR}/packaging/etc/${flags_file}
    DESTINATION ${FEDGE_CONFIG_DIR} COMPONENT ${component})
  install(FILES ${PROJECT_SOURCE_DIR}/docs/operations.md
    DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/${package} COMPONENT ${component})
endfunction()

fedge_service_package(edge fedge-edge edge.flags /var/lib/fedge-edge)
fedge_service_package(cloud fedge-cloud cloud.flags /var/lib/fedge-cloud)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME fedge)
set(CPACK_PACKAGE_VENDOR fedge)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT ${FEDGE_PACKAGE_MAINTAINER})
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_COMPONENTS_ALL edge cloud ctl)

set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)  # <name>_<version>_<arch>.deb
set(CPACK_DEBIAN_PACKAGE_MAINTAINER ${FEDGE_PACKAGE_MAINTAINER})
set(CPACK_DEBIAN_PACKAGE_HOMEPAGE ${FEDGE_PACKAGE_HOMEPAGE})
set(CPACK_DEBIAN_PACKAGE_SECTION science)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_DEBIAN_COMPRESSION_TYPE xz)

set(CPACK_DEBIAN_EDGE_PACKAGE_NAME fedge-edge)
set(CPACK_DEBIAN_EDGE_DESCRIPTION
    "fedge edge node: local inference and federated training
Serves predictions to local devices from the active model version, keeps serving with no
uplink, and fine-tunes models on local data with LibTorch when the fedge cloud asks.
Ships the fedge-edge.service systemd unit (not enabled on install: set --node_id in
/etc/fedge/edge.flags first).")
set(CPACK_DEBIAN_CLOUD_PACKAGE_NAME fedge-cloud)
set(CPACK_DEBIAN_CLOUD_DESCRIPTION
    "fedge cloud coordinator: federated training and model registry
Runs federated training jobs over a fleet of fedge edge nodes, registers every model
version with its lineage, and rolls versions out to the fleet. Ships the
fedge-cloud.service systemd unit (not enabled on install).")
set(CPACK_DEBIAN_CTL_PACKAGE_NAME fedgectl)
set(CPACK_DEBIAN_CTL_DESCRIPTION
    "fedge operators' command line
Registers models, starts and watches training jobs, promotes and rolls back versions,
and lists nodes, through the fedge cloud's Admin API.")

# Packaging needs only the three binaries: `install` and cpack must not build the whole tree
# (tests, benchmarks) first. The Makefile's package target and the packaging tests build the
# binaries themselves.
set(CMAKE_SKIP_INSTALL_ALL_DEPENDENCY ON)

include(CPack)
