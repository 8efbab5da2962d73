"""The checks of scripts/validate-deploy.sh, one module per kind of deployment file."""
