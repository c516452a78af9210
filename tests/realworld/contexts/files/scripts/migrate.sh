#!/bin/sh
echo migrating
